"""Throughput benchmark of the parallel executor against the usual baselines, in one run.

    python -m models.executor.benchmark --model qwen2.5-coder-0.5b-instruct --out outputs/bench/executor
    python -m models.executor.benchmark --model qwen2.5-coder-0.5b-instruct --quick     # smaller grid

Workloads (docs/DESIGN.md): W1 shared-document QA (a document of D tokens, N questions of
~12 tokens, answers of A tokens, 1+ documents per batch) and W3 repeated generation
(one prompt, n = 2..32 samples). Methods: one query at a time (`generate`), batched
`generate` with left padding, all questions in one prompt (SeqBatch, W1 only), the
masked-attention executor, and vLLM with prefix caching (batch of sub-prompts; only
where vLLM is installed; run in a subprocess so its threads do not share the process).
Answers have a fixed length (EOS neither stops nor is suppressed) so every method
decodes the same number of tokens and greedy outputs are comparable. Reports generated tokens/s, wall time, peak RSS, token-exactness against one
at a time, and the decode step against the weight-bytes / memory-bandwidth bound.
Writes `<out>/results.json`, `results.md` and `throughput.png`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from models.executor import ParallelExecutor, SamplingConfig
from models.weights.registry import DEFAULT_DECOMPOSER


@dataclass
class Workload:
    name: str
    doc_tokens: int
    questions: int
    answer_tokens: int
    documents: int = 1
    repeated: bool = False  # W3: n identical prompts


@dataclass
class Measurement:
    workload: str
    method: str
    seconds: float
    generated_tokens: int
    tokens_per_s: float
    peak_rss_mb: float
    exact_vs_one_at_a_time: float | None  # fraction of branches token-identical
    ratio_vs_one_at_a_time: float | None = None
    decode_step_ms: float | None = None  # executor: mean time of one decode step (all live branches)


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 10 ms)."""

    def __enter__(self):
        import psutil

        self.proc = psutil.Process()
        self.peak = self.proc.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.01)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()

    @property
    def mb(self) -> float:
        return self.peak / 2**20


def make_prompts(tokenizer, w: Workload, seed: int = 0) -> tuple[list[list[list[int]]], list[list[int]]]:
    """Per document: the token ids of its sub-prompts (chat-templated, document first),
    and the SeqBatch prompt that asks all its questions at once."""
    rng = random.Random(seed)
    size = len(tokenizer)
    vocab = list(range(1000, 30000)) if size > 40000 else list(range(10, size - 10))  # ordinary tokens

    def chat(text: str) -> list[int]:
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True, return_dict=False
        )

    groups, seq = [], []
    for _ in range(w.documents):
        doc = tokenizer.decode([rng.choice(vocab) for _ in range(w.doc_tokens)])
        if w.repeated:
            subs = [f"{doc}\n\nWrite one short slogan inspired by the text above."] * w.questions
            together = f"{doc}\n\nWrite {w.questions} short slogans inspired by the text above."
        else:
            questions = [tokenizer.decode([rng.choice(vocab) for _ in range(12)]) for _ in range(w.questions)]
            subs = [f"{doc}\n\nAnswer the question about the text above: {q}" for q in questions]
            together = f"{doc}\n\nAnswer each question about the text above:\n" + "\n".join(
                f"{i}. {q}" for i, q in enumerate(questions, 1)
            )
        groups.append([chat(s) for s in subs])
        seq.append(chat(together))
    return groups, seq


def one_at_a_time(model, groups, w: Workload) -> list[list[list[int]]]:
    out = []
    for group in groups:
        row = []
        for ids in group:
            gen = model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=w.answer_tokens,
                do_sample=False,
            )
            row.append(gen[0, len(ids) :].tolist())
        out.append(row)
    return out


def batched_generate(model, tokenizer, groups, w: Workload) -> list[list[list[int]]]:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = []
    for group in groups:
        width = max(len(x) for x in group)
        ids = torch.tensor([[pad] * (width - len(x)) + x for x in group])
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in group])
        gen = model.generate(
            ids, attention_mask=mask, max_new_tokens=w.answer_tokens, do_sample=False, pad_token_id=pad
        )
        out.append([row[width:].tolist() for row in gen])
    return out


def seqbatch(model, seq_prompts: list[list[int]], w: Workload) -> int:
    total = 0
    for ids in seq_prompts:
        n = w.answer_tokens * w.questions
        model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=n,
            do_sample=False,
        )
        total += n
    return total


def executor(model, groups, w: Workload, group_size: int | None) -> tuple[list[list[list[int]]], float]:
    ex = ParallelExecutor(model)
    res = ex.run_groups(groups, SamplingConfig(max_new_tokens=w.answer_tokens), group_size)
    step_ms = 1000 * ex.stats.decode_seconds / max(1, ex.stats.decode_steps)
    return [[r.token_ids for r in g] for g in res], step_ms


def single_branch_step_ms(model, context: int = 512, steps: int = 8) -> float:
    """Time of one decode step of one sequence with a warm KV cache."""
    from transformers import DynamicCache

    cache = DynamicCache()
    with torch.inference_mode():
        out = model(input_ids=torch.full((1, context), 1000), past_key_values=cache, use_cache=True, logits_to_keep=1)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        start = time.perf_counter()
        for _ in range(steps):
            out = model(input_ids=token, past_key_values=cache, use_cache=True)
            token = out.logits[:, -1].argmax(-1, keepdim=True)
    return 1000 * (time.perf_counter() - start) / steps


VLLM_SCRIPT = """
import json, sys, time
from vllm import LLM, SamplingParams, TokensPrompt
model, groups, answer = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
llm = LLM(model=model, enforce_eager=True, distributed_executor_backend="uni", dtype="float32",
          enable_prefix_caching=True, max_model_len=4096)
prompts = [TokensPrompt(prompt_token_ids=ids) for g in groups for ids in g]
params = SamplingParams(max_tokens=answer, temperature=0, ignore_eos=True)
# warm-up on unrelated tokens: it must not put the measured prompts' prefix in the cache
llm.generate([TokensPrompt(prompt_token_ids=list(range(1000, 1016)))], params, use_tqdm=False)
start = time.perf_counter()
outs = llm.generate(prompts, params, use_tqdm=False)
print("VLLM:" + json.dumps({"seconds": time.perf_counter() - start,
                             "tokens": [list(o.outputs[0].token_ids) for o in outs]}))
"""


def run_vllm(model_path: str, groups, w: Workload) -> tuple[float, list[list[list[int]]]] | None:
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return None
    from models.serving.vllm_env import cpu_env

    env = {**os.environ, **cpu_env(kv_cache_gib=2)}
    proc = subprocess.run(
        [sys.executable, "-c", VLLM_SCRIPT, model_path, json.dumps(groups), str(w.answer_tokens)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    if proc.returncode != 0:
        print(f"vLLM failed: {proc.stderr[-1500:]}", file=sys.stderr)
        return None
    payload = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("VLLM:"))[5:])
    flat = iter(payload["tokens"])
    return payload["seconds"], [[next(flat) for _ in g] for g in groups]


def exactness(ref, got) -> float:
    pairs = [(a, b) for ga, gb in zip(ref, got, strict=True) for a, b in zip(ga, gb, strict=True)]
    return sum(a == b for a, b in pairs) / len(pairs)


def memory_bandwidth_gbs(size_mb: int = 512, repeats: int = 5) -> float:
    """Copy bandwidth (read + write) of a large tensor: a rough memory-bandwidth figure."""
    src = torch.ones(size_mb * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    start = time.perf_counter()
    for _ in range(repeats):
        dst.copy_(src)
    seconds = (time.perf_counter() - start) / repeats
    return 2 * src.numel() * 4 / seconds / 1e9


def run_workload(model, tokenizer, model_path: str, w: Workload, methods: list[str]) -> list[Measurement]:
    groups, seq_prompts = make_prompts(tokenizer, w)
    n_tokens = w.answer_tokens * w.questions * w.documents
    results, ref = [], None

    def record(method, seconds, tokens, rss, exact):
        results.append(Measurement(w.name, method, seconds, tokens, tokens / seconds, rss, exact))

    for method in methods:
        with PeakRSS() as rss:
            start = time.perf_counter()
            if method == "one_at_a_time":
                ref = one_at_a_time(model, groups, w)
                record(method, time.perf_counter() - start, n_tokens, rss.mb, 1.0)
                continue
            if method == "batched_generate":
                got = batched_generate(model, tokenizer, groups, w)
            elif method == "seqbatch":
                if w.repeated:
                    continue
                tokens = seqbatch(model, seq_prompts, w)
                record(method, time.perf_counter() - start, tokens, rss.mb, None)
                continue
            elif method == "executor":
                got, step_ms = executor(model, groups, w, group_size=None)
                record(method, time.perf_counter() - start, n_tokens, rss.mb, exactness(ref, got) if ref else None)
                results[-1].decode_step_ms = step_ms
                continue
            elif method == "vllm_prefix_cache":
                out = run_vllm(model_path, groups, w)
                if out is None:
                    continue
                seconds, got = out
                record(method, seconds, n_tokens, float("nan"), exactness(ref, got) if ref else None)
                continue
            else:
                raise ValueError(f"unknown method {method}")
        record(method, time.perf_counter() - start, n_tokens, rss.mb, exactness(ref, got) if ref else None)
    base = next((m for m in results if m.method == "one_at_a_time"), None)
    for m in results:
        m.ratio_vs_one_at_a_time = m.tokens_per_s / base.tokens_per_s if base else None
    return results


def plot(results: list[Measurement], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(dict.fromkeys(m.workload for m in results))
    methods = list(dict.fromkeys(m.method for m in results))
    fig, ax = plt.subplots(figsize=(max(7, 1.6 * len(workloads)), 4.5))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        xs, ys = [], []
        for j, w in enumerate(workloads):
            m = next((m for m in results if m.workload == w and m.method == method), None)
            if m:
                xs.append(j + i * width)
                ys.append(m.tokens_per_s)
        ax.bar(xs, ys, width, label=method)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(workloads))], workloads, rotation=20, ha="right")
    ax.set_ylabel("generated tokens / s")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def workloads(quick: bool) -> list[Workload]:
    if quick:
        return [Workload("W1 d256 q4 a5", 256, 4, 5), Workload("W3 n4 a8", 64, 4, 8, repeated=True)]
    return [
        Workload("W1 d512 q16 a32", 512, 16, 32),
        Workload("W1 d256 q4 a5", 256, 4, 5),
        Workload("W1 d256 q16 a5", 256, 16, 5),
        Workload("W1 d256 q8 a32 x2docs", 256, 8, 32, documents=2),
        *[Workload(f"W3 n{n} a16", 64, n, 16, repeated=True) for n in (2, 4, 8, 16, 32)],
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_DECOMPOSER, help="registry name or local folder")
    parser.add_argument("--out", default="outputs/bench/executor")
    parser.add_argument("--methods", default="one_at_a_time,batched_generate,seqbatch,executor,vllm_prefix_cache")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", help="substring of workload names to run")
    args = parser.parse_args(argv)
    from models.weights import load_causal_lm, resolve_model

    tokenizer, model = load_causal_lm(args.model, "float32")
    # Fixed-length answers: no method stops at (or suppresses) EOS, so all decode the same tokens.
    model.generation_config.eos_token_id = None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    bandwidth = memory_bandwidth_gbs()
    step_ms = single_branch_step_ms(model)
    methods = args.methods.split(",")
    results: list[Measurement] = []
    for w in workloads(args.quick):
        if args.only and args.only not in w.name:
            continue
        print(f"== {w.name}", file=sys.stderr)
        with torch.inference_mode():
            results.extend(run_workload(model, tokenizer, resolve_model(args.model), w, methods))
        (out / "results.json").write_text(
            json.dumps(
                {
                    "model": args.model,
                    "threads": torch.get_num_threads(),
                    "weight_bytes": weight_bytes,
                    "copy_bandwidth_gb_s": bandwidth,
                    "single_branch_step_ms": step_ms,
                    "bound_tokens_per_s_one_branch": bandwidth * 1e9 / weight_bytes,
                    "results": [asdict(m) for m in results],
                },
                indent=2,
            )
        )
    bound = bandwidth * 1e9 / weight_bytes
    lines = [
        f"Model `{args.model}`, {weight_bytes / 1e9:.2f} GB of weights, copy bandwidth {bandwidth:.1f} GB/s: "
        f"one decode step cannot beat {1000 / bound:.0f} ms (the weights are read once per step); "
        f"measured single-sequence step {step_ms:.0f} ms ({100 * 1000 / bound / step_ms:.0f}% of the bound). "
        f"{torch.get_num_threads()} threads.",
        "",
        "| workload | method | wall s | tokens | tokens/s | x one-at-a-time | peak RSS MB | exact | step ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in results:
        exact = "-" if m.exact_vs_one_at_a_time is None else f"{m.exact_vs_one_at_a_time:.2f}"
        rss = "-" if m.peak_rss_mb != m.peak_rss_mb else f"{m.peak_rss_mb:.0f}"  # NaN: measured in a subprocess
        ratio = "-" if m.ratio_vs_one_at_a_time is None else f"{m.ratio_vs_one_at_a_time:.2f}"
        step = "-" if m.decode_step_ms is None else f"{m.decode_step_ms:.0f}"
        lines.append(
            f"| {m.workload} | {m.method} | {m.seconds:.1f} | {m.generated_tokens} | {m.tokens_per_s:.1f} | "
            f"{ratio} | {rss} | {exact} | {step} |"
        )
    (out / "results.md").write_text("\n".join(lines) + "\n")
    plot(results, out / "throughput.png")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
