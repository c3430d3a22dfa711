"""The decomposer's cost on realistic traffic: a 9:1 mix of serial and parallelizable test
prompts, one prompt at a time (the latency a user sees), gated vs the whole-output
decoding, next to the serial answer's own time on the same prompts.

    python -m eval.decomposer.traffic --adapter artifacts/adapters/<name> \\
        [--merged outputs/merged/<name>] [--split outputs/data/default/test.jsonl] \\
        [--negatives 27 --positives 3] [--backend vllm] [--out artifacts/bench/traffic]

Stages, each checkpointed per prompt in `<out>/work/` (a rerun resumes): the gated
decomposer, the ungated one (same engine, gate off, the behaviour before the gate), with
`--merged` the same adapter merged into its base (`python -m models.decomposer.merge`),
gated, on its own engine without LoRA, then the serial answer (answer model,
`models.pipeline.config.AnswerConfig` defaults, greedy). Prefix caching
is off, so no run reuses another's prefill. Overhead = the decomposer's seconds over the
serial answer's, summed over the mix. Writes `results.json`, `report.md`, `latency.png`.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from data_prep.jsonl_io import append_jsonl, atomic_write_text, read_jsonl_repairing
from data_prep.schema import Record
from data_prep.splits import load_split
from eval.provenance import machine_description
from models.pipeline.config import AnswerConfig
from models.weights.registry import DEFAULT_DECOMPOSER

STAGES = ("gated", "ungated", "merged")
CURVES = {  # the latency plot: label and colour of each stage
    "answer": ("serial answer", "tab:grey"),
    "ungated": ("decomposer, whole output", "tab:orange"),
    "gated": ("decomposer, gated", "tab:blue"),
    "merged": ("decomposer merged, gated", "tab:green"),
}


def traffic_mix(records: list[Record], negatives: int, positives: int, seed: int) -> list[Record]:
    """`negatives` serial and `positives` parallelizable gold records, shuffled (seeded)."""
    rng = random.Random(seed)
    neg = [r for r in records if not r.parallelizable]
    pos = [r for r in records if r.parallelizable]
    if len(neg) < negatives or len(pos) < positives:
        raise ValueError(f"the split has {len(neg)} serial / {len(pos)} parallelizable records; asked for more")
    mix = rng.sample(neg, negatives) + rng.sample(pos, positives)
    rng.shuffle(mix)
    return mix


def run_stage(path: Path, mix: list[Record], measure) -> dict[str, dict[str, Any]]:
    done = {row["id"]: row for row in read_jsonl_repairing(path)}
    todo = [r for r in mix if r.id not in done]
    for rec in tqdm(todo, desc=path.stem, unit="prompt"):
        row = {"id": rec.id, **measure(rec)}
        append_jsonl(path, [row])
        done[rec.id] = row
    return done


def decomposer_measure(decomposer, gate: bool):
    def measure(rec: Record) -> dict[str, Any]:
        decomposer.gate = gate
        start = time.perf_counter()
        d = decomposer.decompose([rec.prompt], [rec.id], batch_size=1)[0]
        return {
            "seconds": time.perf_counter() - start,
            "decode_tokens": d.generated_tokens,
            "split": d.record.parallelizable,
            "p_parallel": d.p_parallel,
        }

    return measure


def summarise(mix: list[Record], rows: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    answer_s = sum(rows["answer"][r.id]["seconds"] for r in mix)
    out: dict[str, Any] = {"serial_answer_seconds_total": round(answer_s, 2)}
    for name in [n for n in STAGES if n in rows]:
        per = rows[name]
        entry: dict[str, Any] = {
            "overhead_vs_serial_answer": round(sum(per[r.id]["seconds"] for r in mix) / answer_s, 4),
            "split_rate": round(sum(per[r.id]["split"] for r in mix) / len(mix), 3),
        }
        for label, want in (("negatives", False), ("positives", True)):
            sel = [r for r in mix if r.parallelizable == want]
            entry[label] = {
                "prompts": len(sel),
                "seconds_mean": round(statistics.fmean(per[r.id]["seconds"] for r in sel), 3),
                "seconds_p50": round(statistics.median(per[r.id]["seconds"] for r in sel), 3),
                "decode_tokens_mean": round(statistics.fmean(per[r.id]["decode_tokens"] for r in sel), 1),
                "decode_tokens_max": max(per[r.id]["decode_tokens"] for r in sel),
                "serial_answer_seconds_mean": round(statistics.fmean(rows["answer"][r.id]["seconds"] for r in sel), 2),
            }
        out[name] = entry
    if "merged" in rows:
        out["merged_same_split"] = sum(rows["merged"][r.id]["split"] == rows["gated"][r.id]["split"] for r in mix)
    return out


def report(result: dict[str, Any]) -> str:
    s = result["summary"]
    lines = [
        f"# Decomposer cost on a {result['negatives']}:{result['positives']} traffic mix",
        "",
        f"Machine: {result['machine']}. Backend `{result['backend']}`, adapter `{result['adapter']}`, threshold "
        f"{result['threshold']}. Command: `{result['command']}`",
        "",
        f"Serial answers (answer model `{result['answer_model']}`, greedy, <= {result['answer_max_new_tokens']} "
        f"tokens): {s['serial_answer_seconds_total']} s over the mix.",
        "",
        "| decomposer | overhead vs serial answer | negatives: s (mean / p50) | negatives: decode tokens "
        "(mean / max) | positives: s (mean) | positives: decode tokens (mean) | split rate |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in [n for n in STAGES if n in s]:
        e = s[name]
        n, p = e["negatives"], e["positives"]
        lines.append(
            f"| {name} | {e['overhead_vs_serial_answer']:.1%} | {n['seconds_mean']} / {n['seconds_p50']} | "
            f"{n['decode_tokens_mean']} / {n['decode_tokens_max']} | {p['seconds_mean']} | "
            f"{p['decode_tokens_mean']} | {e['split_rate']} |"
        )
    g, u = s["gated"], s["ungated"]
    lines += [
        "",
        f"Gated / ungated decomposer time on negatives: "
        f"{g['negatives']['seconds_mean'] / u['negatives']['seconds_mean']:.2f}x; on positives: "
        f"{g['positives']['seconds_mean'] / u['positives']['seconds_mean']:.2f}x.",
    ]
    if "merged" in s:
        m = s["merged"]
        lines += [
            f"Merged / LoRA (both gated) decomposer time on negatives: "
            f"{m['negatives']['seconds_mean'] / g['negatives']['seconds_mean']:.2f}x; on positives: "
            f"{m['positives']['seconds_mean'] / g['positives']['seconds_mean']:.2f}x; the same split decision on "
            f"{s['merged_same_split']} of {len(result['ids'])} prompts.",
        ]
    return "\n".join(lines) + "\n"


def plot(mix: list[Record], rows: dict[str, dict[str, dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, (label, color) in CURVES.items():
        if name not in rows:
            continue
        xs = sorted(rows[name][r.id]["seconds"] for r in mix)
        ax.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], drawstyle="steps-post", color=color,
                label=label)  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("seconds per prompt (log)")
    ax.set_ylabel("fraction of prompts")
    ax.set_title("latency per prompt on the traffic mix")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", required=True)
    parser.add_argument("--model", default=DEFAULT_DECOMPOSER)
    parser.add_argument("--merged", help="the adapter merged into its base (python -m models.decomposer.merge)")
    parser.add_argument(
        "--threshold",
        type=float,
        help="the gate's threshold for the adapter and the merged model alike (default: the adapter's calibrated "
        "one), e.g. the one `python -m eval.decomposer.calibrate --prior 0.1` gives for real traffic",
    )
    parser.add_argument("--split", default="outputs/data/default/test.jsonl")
    parser.add_argument("--negatives", type=int, default=27)
    parser.add_argument("--positives", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", default="vllm", choices=["vllm", "hf"])
    parser.add_argument("--answer-max-new-tokens", type=int, default=384)
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench/traffic"))
    args = parser.parse_args(argv)
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        parser.error(f"--threshold must be in [0, 1], not {args.threshold}")
    from models.decomposer import DecomposerError, load_decomposer
    from models.pipeline.answer import load_answerer

    try:
        mix = traffic_mix(load_split(args.split), args.negatives, args.positives, args.seed)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    work = args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    options: dict[str, Any] = {"model": args.model, "adapter": args.adapter}
    if args.threshold is not None:
        options["threshold"] = args.threshold
    if args.backend == "vllm":
        options["prefix_caching"] = False
    try:
        decomposer = load_decomposer(args.backend, **options)
    except DecomposerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    decomposer.decompose([mix[0].prompt], ["warm-up"], batch_size=1)  # kernels, grammar: not timed
    for name, gate in (("gated", True), ("ungated", False)):
        rows[name] = run_stage(work / f"{name}.jsonl", mix, decomposer_measure(decomposer, gate))
    threshold = decomposer.threshold
    del decomposer
    gc.collect()
    if args.merged:
        try:
            merged = load_decomposer(args.backend, **{**options, "model": args.merged, "adapter": None})
        except DecomposerError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        if merged.threshold != threshold:
            print(f"error: {args.merged} has threshold {merged.threshold}, the adapter {threshold}", file=sys.stderr)
            return 2
        merged.decompose([mix[0].prompt], ["warm-up"], batch_size=1)
        rows["merged"] = run_stage(work / "merged.jsonl", mix, decomposer_measure(merged, True))
        del merged
        gc.collect()
    cfg = AnswerConfig(model=args.model, serial_max_new_tokens=args.answer_max_new_tokens)
    answerer = load_answerer("vllm" if args.backend == "vllm" else "executor", cfg)
    answerer.serial(mix[0].prompt)  # warm-up

    def answer(rec: Record) -> dict[str, Any]:
        run = answerer.serial(rec.prompt)
        return {"seconds": run.seconds, "tokens": run.tokens[0]}

    rows["answer"] = run_stage(work / "answer.jsonl", mix, answer)
    result = {
        "machine": machine_description(),
        "command": "python -m eval.decomposer.traffic " + " ".join(argv if argv is not None else sys.argv[1:]),
        "backend": args.backend,
        "adapter": args.adapter,
        "merged": args.merged,
        "threshold": threshold,
        "answer_model": args.model,
        "answer_max_new_tokens": args.answer_max_new_tokens,
        "negatives": args.negatives,
        "positives": args.positives,
        "ids": [r.id for r in mix],
        "summary": summarise(mix, rows),
    }
    atomic_write_text(args.out / "results.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(args.out / "report.md", report(result))
    plot(mix, rows, args.out / "latency.png")
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
