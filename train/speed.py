"""Training cost on this machine: the SFT recipe's variants side by side, same examples.

    python -m train.speed --examples 16 --out artifacts/bench/training

Each variant is a real `accelerate launch train/sft.py` run (a fresh process, so thread
pools, compile caches and memory do not leak between variants) on the same training
examples, for the same number of optimizer steps; its cost is the Trainer's own
`train_runtime`. Variants change one thing against the committed recipe (long system
prompt, TRL's defaults of bf16 autocast and gradient checkpointing, LoRA on every layer),
then the combination. Results: `speed.json`, `speed.md` (one table, ratios to the
baseline) and `speed.png`; each finished variant is kept, so a rerun resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import datasets
from tqdm.auto import tqdm

from data_prep.formatting import sft_example
from data_prep.jsonl_io import atomic_write_text
from data_prep.schema import Record
from models.weights.registry import DEFAULT_DECOMPOSER

RECIPE = "configs/sft/qwen2.5-coder-0.5b-lora-cpu.yaml"
# name -> (output format of the examples, command-line overrides of the recipe, examples
# cap). After the baseline, a ladder: each rung keeps the changes above it and adds one.
_FP32 = ["--bf16", "false"]
_NO_CKPT = ["--gradient_checkpointing", "false"]
_UPPER = ["--lora_first_layer", "12"]
BASELINE = "baseline: committed recipe, fp32"
VARIANTS: dict[str, tuple[str, list[str], int | None]] = {
    BASELINE: ("anchor-v1", _FP32, None),
    "+ minimal system prompt": ("anchor-v2", _FP32, None),
    "+ no gradient checkpointing": ("anchor-v2", _FP32 + _NO_CKPT, None),
    "+ LoRA on layers 12-23 only": ("anchor-v2", _FP32 + _NO_CKPT + _UPPER, None),
    "+ batch 4 (padded) x 1": ("anchor-v2", _FP32 + _NO_CKPT + _UPPER + ["--per_device_train_batch_size", "4"], None),
    "+ torch.compile": ("anchor-v2", _FP32 + _NO_CKPT + _UPPER + ["--torch_compile", "true"], None),
}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}"


def matmul_rates(m: int = 330, k: int = 896, n: int = 4864, repeats: int = 3) -> dict[str, float]:
    """GFLOP/s of one MLP-shaped matmul (a 330-token example through a gate/up projection
    of the 0.5B) in fp32 and bf16 on this CPU: why bf16 autocast (TRL's default) is no
    variant here. A bf16 training run did not finish 3 examples in 13 minutes."""
    import torch

    a, b = torch.randn(m, k), torch.randn(k, n)
    rates = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        x, y = a.to(dtype), b.to(dtype)
        x @ y
        began = time.perf_counter()
        for _ in range(repeats):
            x @ y
        rates[name] = round(2 * m * k * n * repeats / (time.perf_counter() - began) / 1e9, 1)
    rates["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return rates


def write_examples(records: list[Record], fmt: str, folder: Path) -> Path:
    rows = [sft_example(r, fmt) for r in records]
    ds = datasets.Dataset.from_list(rows)
    path = folder / f"sft-{fmt}"
    datasets.DatasetDict({"train": ds, "validation": ds.select(range(1))}).save_to_disk(str(path))
    return path


def token_counts(records: list[Record], fmt: str, model_path: str) -> list[int]:
    from transformers import AutoTokenizer

    from train.data import conversation_length

    tok = AutoTokenizer.from_pretrained(model_path)
    return [conversation_length(tok, sft_example(r, fmt)) for r in records]


def run_variant(dataset: Path, overrides: list[str], steps: int, per_step: int, workdir: Path) -> dict:
    out = workdir / "run"
    shutil.rmtree(out, ignore_errors=True)  # never read a previous variant's results
    batch = (
        int(overrides[overrides.index("--per_device_train_batch_size") + 1])
        if "--per_device_train_batch_size" in overrides
        else 1
    )
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", "configs/accelerate/cpu.yaml",
        "train/sft.py", "--config", RECIPE, "--dataset_path", str(dataset), "--output_dir", str(out),
        "--max_steps", str(steps), "--gradient_accumulation_steps", str(per_step // batch), "--eval_strategy", "no",
        "--save_strategy", "no", "--logging_steps", "1", "--warmup_steps", "0",
        *overrides,
    ]  # fmt: skip
    began = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if proc.returncode != 0:
        raise RuntimeError(f"variant failed ({' '.join(overrides) or 'baseline'}):\n{proc.stderr[-3000:]}")
    metrics = json.loads((out / "train_results.json").read_text())
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    losses = [h["loss"] for h in history if "loss" in h]
    return {"train_runtime_s": metrics["train_runtime"], "process_wall_s": round(wall, 1), "losses": losses}


def speedup(r: dict, base: dict) -> float:
    """Examples/s over the baseline's on the same examples; a row run on fewer examples
    (the same format) is compared by tokens/s."""
    if r["examples"] == base["examples"]:
        return base["train_runtime_s"] / r["train_runtime_s"]
    return (r["tokens"] / r["train_runtime_s"]) / (base["tokens"] / base["train_runtime_s"])


def render(results: dict[str, dict], examples: int, rates: dict | None = None) -> str:
    base = results.get(BASELINE)
    lines = [
        f"# Training cost per variant ({examples} training examples, the same ones; {machine()})",
        "",
        "Each row after the baseline adds one change to the rows above it. Speedup: examples/s over the baseline's.",
        "",
        "| variant | format | examples | tokens | train s | examples/s | tokens/s | speedup | first / last loss |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in results.items():
        eps = r["examples"] / r["train_runtime_s"]
        ratio = f"{speedup(r, base):.2f}x" if base else "-"
        loss = f"{r['losses'][0]:.3f} / {r['losses'][-1]:.3f}" if r["losses"] else "-"
        lines.append(
            f"| {name} | {r['format']} | {r['examples']} | {r['tokens']} | {r['train_runtime_s']:.1f} | {eps:.3f} | "
            f"{r['tokens'] / r['train_runtime_s']:.1f} | {ratio} | {loss} |"
        )
    if rates:
        lines += [
            "",
            f"bf16: TRL's SFTConfig turns bf16 autocast on by default. On this CPU (torch capability "
            f"{rates['cpu_capability']}, no AVX-512 / AMX exposed) a 330x896x4864 matmul runs at "
            f"{rates['fp32']} GFLOP/s in fp32 and {rates['bf16']} GFLOP/s in bf16, so the recipe now sets "
            "`bf16: false`; a bf16 run of this recipe did not finish 3 examples in 13 minutes.",
        ]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    ratios = [speedup(results[n], results[BASELINE]) for n in names]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.2))
    ax.barh(names[::-1], ratios[::-1], color="tab:blue")
    ax.axvline(1.0, color="grey", lw=0.8)
    ax.set_xlabel("training speedup vs the committed recipe in fp32 (examples/s, same examples)")
    for y, v in enumerate(ratios[::-1]):
        ax.text(v, y, f" {v:.2f}x", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="outputs/data/default/train.jsonl", help="schema JSONL of training records")
    parser.add_argument("--examples", type=int, default=16, help="examples per variant (a multiple of --per-step)")
    parser.add_argument("--per-step", type=int, default=4, help="examples per optimizer step")
    parser.add_argument("--variants", nargs="*", help="names of VARIANTS to run (default: all)")
    parser.add_argument("--out", default="artifacts/bench/training")
    args = parser.parse_args(argv)
    from models.weights import resolve_model

    if args.examples % args.per_step:
        parser.error("--examples must be a multiple of --per-step")
    data = Path(args.data)
    if not data.is_file():
        parser.error(f"{data} not found: build the data set first (python -m data_prep.build --config ...)")
    records = [
        Record.model_validate_json(line) for line in data.read_text(encoding="utf-8").splitlines()[: args.examples]
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state = out / "speed.json"
    saved = json.loads(state.read_text()) if state.is_file() else {}
    results: dict[str, dict] = saved.get("variants", {})
    rates = saved.get("matmul") or matmul_rates()
    model_path = resolve_model(DEFAULT_DECOMPOSER)
    names = args.variants or list(VARIANTS)
    unknown = set(names) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; known: {list(VARIANTS)}")
    with tempfile.TemporaryDirectory(prefix="train-speed-") as tmp:
        tokens = {fmt: token_counts(records, fmt, model_path) for fmt in {VARIANTS[n][0] for n in names}}
        for name in tqdm(names, desc="variants", unit="run"):
            if name in results:
                continue
            fmt, overrides, cap = VARIANTS[name]
            count = cap or args.examples
            per_step = min(args.per_step, count)
            folder = write_examples(records[:count], fmt, Path(tmp) / f"{len(results)}")
            r = run_variant(folder, overrides, count // per_step, per_step, Path(tmp) / "w")
            results[name] = {
                "format": fmt,
                "overrides": overrides,
                "examples": count,
                "tokens": sum(tokens[fmt][:count]),
                **r,
            }
            payload = {"examples": args.examples, "machine": machine(), "variants": results, "matmul": rates}
            atomic_write_text(state, json.dumps(payload, indent=2) + "\n")
            tqdm.write(f"{name}: {r['train_runtime_s']:.1f} s")
    ordered = {n: results[n] for n in VARIANTS if n in results}
    atomic_write_text(out / "speed.md", render(ordered, args.examples, rates))
    if BASELINE in ordered:
        plot(ordered, out / "speed.png")
    print(render(ordered, args.examples, rates))
    return 0


if __name__ == "__main__":
    sys.exit(main())
