"""Decomposer inference benchmark, side by side in one run, on one machine:

1. Output format: decode tokens of the gold decompositions written compact (anchor-v1)
   vs verbatim (json-v2), over a whole split, with the base model's tokenizer.
2. Runs of the real model on a fixed sample of the split, one row per (backend,
   constrained, adapter): prompts/s with batching (hf: batches of `--batch-size`; vllm:
   the whole sample at once), p50 latency of single prompts, valid-JSON rate, rate of
   decompositions used (no serial fallback), parallelizable accuracy vs gold, decode
   tokens and seconds per prompt.

    python -m eval.decomposer.speed \\
        --adapter compact=artifacts/adapters/qwen2.5-coder-0.5b-lora-cpu-anchor-v1 \\
        --adapter verbatim=artifacts/adapters/qwen2.5-coder-0.5b-lora-cpu \\
        --limit 32 --out artifacts/bench/decomposer

Each run is saved as it finishes (`runs/<name>.json`, atomically); a rerun skips finished
runs. Writes `results.json`, `results.md` and `results.png` into `--out`.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from data_prep.formatting import FORMATS, format_completion
from data_prep.jsonl_io import atomic_write_text
from data_prep.schema import Record
from data_prep.splits import load_split
from eval.provenance import machine_description
from models.weights.registry import DEFAULT_DECOMPOSER


def format_tokens(records: list[Record], tokenizer) -> dict[str, Any]:
    """Decode tokens of the gold completions in each format (+1 for end of turn)."""
    per: dict[str, list[int]] = {
        fmt: [len(tokenizer.encode(format_completion(r, fmt), add_special_tokens=False)) + 1 for r in records]
        for fmt in FORMATS
    }
    with_context = [i for i, r in enumerate(records) if r.context]
    out: dict[str, Any] = {"records": len(records), "records_with_context": len(with_context)}
    for fmt, counts in per.items():
        out[fmt] = {
            "total": sum(counts),
            "mean": round(statistics.fmean(counts), 1),
            "max": max(counts),
            "mean_with_context": round(statistics.fmean([counts[i] for i in with_context]), 1)
            if with_context
            else None,
        }
    out["compact_over_verbatim"] = round(sum(per["anchor-v1"]) / sum(per["json-v2"]), 3)
    return out


def measure(decomposer, gold: list[Record], batch_size: int, latency_prompts: int) -> dict[str, Any]:
    """Throughput with batching, then single-prompt latency, on the same prompts."""
    prompts, ids = [g.prompt for g in gold], [g.id for g in gold]
    decomposer.decompose(prompts[:1], ids[:1], batch_size=1)  # warm-up (grammar, kernels), not timed
    start = time.perf_counter()
    results = decomposer.decompose(prompts, ids, batch_size=batch_size)
    wall = time.perf_counter() - start
    latencies = []
    for p, i in zip(prompts[:latency_prompts], ids[:latency_prompts], strict=True):
        t = time.perf_counter()
        decomposer.decompose([p], [i], batch_size=1)
        latencies.append(time.perf_counter() - t)
    n = len(results)
    return {
        "prompts": n,
        "wall_seconds": round(wall, 2),
        "prompts_per_second": round(n / wall, 4),
        "latency_p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "latency_prompts": len(latencies),
        "valid_json_rate": round(sum(r.valid_json for r in results) / n, 3),
        "decomposition_used_rate": round(sum(r.fallback_reason is None for r in results) / n, 3),
        "parallelizable_accuracy": round(
            sum(r.record.parallelizable == g.parallelizable for r, g in zip(results, gold, strict=True)) / n, 3
        ),
        "decode_tokens_mean": round(statistics.fmean(r.generated_tokens for r in results), 1),
        "truncated": sum(bool(r.fallback_reason and "token budget" in r.fallback_reason) for r in results),
        "fallback_reasons": sorted({r.fallback_reason.split(":")[0] for r in results if r.fallback_reason})[:10],
        "predictions": [
            {"id": r.record.id, "raw": r.raw, "fallback_reason": r.fallback_reason, "tokens": r.generated_tokens}
            for r in results
        ],
    }


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["name"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, key, label in zip(
        axes,
        ("prompts_per_second", "latency_p50_s", "decomposition_used_rate"),
        ("prompts / s (batched)", "p50 latency, one prompt (s)", "decompositions used (no fallback)"),
        strict=True,
    ):
        ax.barh(names, [r[key] or 0 for r in rows], color="tab:blue")
        ax.set_title(label)
        ax.invert_yaxis()
    axes[2].set_xlim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(result: dict[str, Any]) -> str:
    ft = result["format_tokens"]
    lines = [
        "# Decomposer inference benchmark",
        "",
        f"Machine: {result['machine']}. Model: `{result['model']}`, fp32, greedy. Command: `{result['command']}`",
        "",
        f"## Output format: decode tokens of the gold decompositions ({result['split']}, {ft['records']} records)",
        "",
        "| format | total tokens | mean / record | mean, records with a context | max |",
        "|---|---|---|---|---|",
    ]
    for fmt in FORMATS:
        f = ft[fmt]
        lines.append(f"| {fmt} | {f['total']} | {f['mean']} | {f['mean_with_context']} | {f['max']} |")
    lines += [
        "",
        f"compact / verbatim = **{ft['compact_over_verbatim']}** of the decode tokens.",
        "",
        f"## Runs ({result['runs'][0]['prompts'] if result['runs'] else 0} prompts of the {result['split']} split)",
        "",
        "| run | backend | constrained | adapter (format) | prompts/s | p50 latency (s) | valid JSON | "
        "decomposition used | parallelizable acc. | decode tokens / prompt | cut by budget |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {r['name']} | {r['backend']} | {r['constrained']} | {r['adapter_label']} ({r['format']}) | "
            f"{r['prompts_per_second']} | {r['latency_p50_s']} | {r['valid_json_rate']} | "
            f"{r['decomposition_used_rate']} | {r['parallelizable_accuracy']} | {r['decode_tokens_mean']} | "
            f"{r['truncated']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_DECOMPOSER)
    parser.add_argument("--adapter", action="append", default=[], help="LABEL=FOLDER (repeatable); first is main")
    parser.add_argument("--split", default="outputs/data/default/validation.jsonl")
    parser.add_argument("--limit", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--latency-prompts", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--backends", default="hf,vllm")
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench/decomposer"))
    args = parser.parse_args(argv)

    from transformers import AutoTokenizer

    from models.decomposer import load_decomposer
    from models.weights import resolve_model

    adapters = dict(a.split("=", 1) for a in args.adapter) or {"base": ""}
    split = load_split(args.split)
    gold = random.Random(args.seed).sample(split, min(args.limit, len(split)))
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(args.model))
    runs_dir = args.out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)

    main_label = next(iter(adapters))
    plan = []  # (backend, constrained, adapter label): every backend x constraint on the main adapter,
    for backend in args.backends.split(","):  # and the other adapters (formats) constrained on each backend
        plan += [(backend, True, main_label), (backend, False, main_label)]
        plan += [(backend, True, label) for label in adapters if label != main_label]
    rows = []
    loaded: dict[tuple[str, str], Any] = {}
    for backend, constrained, label in plan:
        name = f"{backend}-{'constrained' if constrained else 'free'}-{label}"
        path = runs_dir / f"{name}.json"
        if path.exists():
            rows.append(json.loads(path.read_text(encoding="utf-8")))
            continue
        key = (backend, label)
        if key not in loaded:
            for other in [k for k in loaded if k[0] == backend]:  # one engine per backend in memory
                del loaded[other]
            loaded[key] = load_decomposer(
                backend,
                model=args.model,
                adapter=adapters[label] or None,
                max_new_tokens=args.max_new_tokens,
                max_model_len=args.max_model_len,
            )
        decomposer = loaded[key]
        decomposer.constrained = constrained
        print(f"[{name}] {len(gold)} prompts", file=sys.stderr)
        row = {
            "name": name,
            "backend": backend,
            "constrained": constrained,
            "adapter_label": label,
            "adapter": adapters[label] or None,
            "format": decomposer.fmt,
            **measure(decomposer, gold, args.batch_size if backend == "hf" else len(gold), args.latency_prompts),
        }
        atomic_write_text(path, json.dumps(row, indent=2, ensure_ascii=False) + "\n")
        rows.append(row)

    result = {
        "machine": machine_description(),
        "model": args.model,
        "split": args.split,
        "command": "python -m eval.decomposer.speed " + " ".join(argv if argv is not None else sys.argv[1:]),
        "format_tokens": format_tokens(split, tokenizer),
        "runs": [{k: v for k, v in r.items() if k != "predictions"} for r in rows],
    }
    atomic_write_text(args.out / "results.json", json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(args.out / "results.md", markdown(result))
    plot(result["runs"], args.out / "results.png")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
