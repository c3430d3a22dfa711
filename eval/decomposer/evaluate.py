"""Decomposers side by side on a labelled split: quality (the targets of the decomposer
issue), per language and category, and the decomposer's own latency on gold negatives
vs positives, in one run and one table.

    python -m eval.decomposer.evaluate --split outputs/data/default/test.jsonl \\
        --decomposer rules=rules \\
        --decomposer base=vllm,fmt=json-v2,gate=0 \\
        --decomposer adapter-v1=vllm,adapter=artifacts/adapters/qwen2.5-coder-0.5b-lora-cpu-anchor-v1,gate=0 \\
        --decomposer adapter-v2=vllm,adapter=artifacts/adapters/<new> \\
        --out artifacts/eval/decomposer/<date>-test

`NAME=BACKEND[,key=value...]` with keys adapter, model, fmt, gate (0/1), threshold. Each
decomposer's predictions are checkpointed (`<out>/pred/<name>.jsonl`, resumable through
`models.decomposer.batch.run_file`); metrics are `eval.decomposer.metrics`'s. Writes `results.json`,
`report.md` and `f1_by_language.png` into `--out`.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from data_prep.jsonl_io import atomic_write_text, read_jsonl_repairing, sidecar
from data_prep.splits import load_split
from eval.decomposer.metrics import COLUMNS, evaluate_predictions, load_records
from eval.provenance import machine_description
from models.decomposer.calibration import DEFAULT_THRESHOLD, average_precision, point, read_calibration
from models.weights.registry import DEFAULT_DECOMPOSER

TARGETS = {  # the decomposer issue's test-split targets
    "schema_valid": 1.0,
    "parallelizable_precision": 0.90,
    "parallelizable_f1": 0.90,
    "item_f1": 0.90,
    "exact_n": 0.95,
}
KEYS = {"adapter", "model", "fmt", "gate", "threshold"}


def parse_spec(text: str) -> tuple[str, str, dict[str, Any]]:
    """NAME=BACKEND[,key=value...] -> (name, backend, options); ValueError naming the problem."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise ValueError(f"--decomposer {text!r}: expected NAME=BACKEND[,key=value...]")
    backend, *pairs = rest.split(",")
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in KEYS:
            raise ValueError(f"--decomposer {text!r}: bad option {pair!r} (keys: {', '.join(sorted(KEYS))})")
        if key == "gate":
            options[key] = value not in ("0", "false", "no")
        elif key == "threshold":
            options[key] = float(value)
        else:
            options[key] = value
    return name, backend, options


def latency(meta_path: Path, gold: dict[str, Any]) -> dict[str, Any]:
    """Decomposer seconds and decode tokens per prompt, gold negatives vs positives."""
    rows = read_jsonl_repairing(meta_path)
    out: dict[str, Any] = {}
    for label, want in (("negatives", False), ("positives", True)):
        sel = [r for r in rows if r["id"] in gold and bool(gold[r["id"]]["parallelizable"]) == want]
        if sel:
            out[label] = {
                "prompts": len(sel),
                "seconds_mean": round(statistics.fmean(r["seconds"] for r in sel), 3),
                "decode_tokens_mean": round(statistics.fmean(r["generated_tokens"] for r in sel), 1),
                "decode_tokens_max": max(r["generated_tokens"] for r in sel),
            }
    return out


def gate_points(meta_path: Path, gold: dict[str, Any], threshold: float | None) -> dict[str, Any] | None:
    """The gate's precision / recall / F1 at 0.5 and at the threshold used, and the average
    precision, from the P(parallelizable) recorded per prompt (None without a gate)."""
    rows = [r for r in read_jsonl_repairing(meta_path) if r["id"] in gold and r.get("p_parallel") is not None]
    if not rows:
        return None
    labels = [bool(gold[r["id"]]["parallelizable"]) for r in rows]
    probs = [float(r["p_parallel"]) for r in rows]
    out: dict[str, Any] = {"average_precision": round(average_precision(labels, probs), 4)}
    for name, t in (("at_0.5", 0.5), ("at_threshold", threshold)):
        if t is not None:
            op = point(labels, probs, t)
            out[name] = {"threshold": t, "precision": op.precision, "recall": op.recall, "f1": op.f1}
    return out


def fmt(v: Any) -> str:
    return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def report(result: dict[str, Any]) -> str:
    names = list(result["decomposers"])
    cols = [c for c in COLUMNS if c[0] not in ("count", "template_valid", "context_exact")]
    lines = [
        f"# Decomposers on `{result['split']}` ({result['count']} prompts, {result['gold_positives']} parallelizable)",
        "",
        f"Machine: {result['machine']}. Command: `{result['command']}`",
        "",
        "| decomposer | " + " | ".join(c for _, c in cols) + " | weakest language (F1) |",
        "|---|" + "---:|" * (len(cols) + 1),
    ]
    for n in names:
        m = result["decomposers"][n]["overall"]
        langs = result["decomposers"][n]["by_language"]
        f1s = {k: v["parallelizable_f1"] for k, v in langs.items() if v["gold_positives"]}
        weakest = min(f1s, key=lambda k: f1s[k] or 0.0) if f1s else None
        lines.append(f"| {n} | " + " | ".join(fmt(m[k]) for k, _ in cols) + f" | {weakest} ({fmt(f1s.get(weakest))}) |")
    lines += [
        "",
        "Targets: " + ", ".join(f"{k} >= {v}" for k, v in TARGETS.items()) + ", every language F1 >= 0.85.",
        "",
    ]

    def group_table(title: str, split: str, value) -> list[str]:
        groups = sorted(next(iter(result["decomposers"].values()))[split])
        rows = [f"## {title}", "", "| decomposer | " + " | ".join(groups) + " |", "|---|" + "---:|" * len(groups)]
        for n in names:
            by = result["decomposers"][n][split]
            rows.append(f"| {n} | " + " | ".join(fmt(value(by[g])) for g in groups) + " |")
        return rows + [""]

    lines += group_table("Parallelizable F1 by language", "by_language", lambda m: m["parallelizable_f1"])
    lines += group_table(
        "Recall (for the serial group: accuracy) by gold category",
        "by_category",
        lambda m: m["parallelizable_recall"] if m["gold_positives"] else m["parallelizable_accuracy"],
    )
    gated = [n for n in names if result["decomposers"][n].get("gate")]
    if gated:
        lines += [
            "## The gate's operating points (from each prompt's recorded P(parallelizable))",
            "",
            "| decomposer | average precision | threshold | P | R | F1 | at 0.5: P | R | F1 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for n in gated:
            g = result["decomposers"][n]["gate"]
            t, h = g.get("at_threshold", {}), g["at_0.5"]
            lines.append(
                f"| {n} | {g['average_precision']:.3f} | {fmt(t.get('threshold'))} | {fmt(t.get('precision'))} | "
                f"{fmt(t.get('recall'))} | {fmt(t.get('f1'))} | {h['precision']:.3f} | {h['recall']:.3f} | "
                f"{h['f1']:.3f} |"
            )
        lines.append("")
    lines += [
        "## Decomposer cost per prompt (batched quality run; seconds are each prompt's share of its batch)",
        "",
        "| decomposer | gold negatives: s | decode tokens (mean / max) | gold positives: s | decode tokens (mean / max) |",
        "|---|---:|---:|---:|---:|",
    ]
    for n in names:
        lat = result["decomposers"][n]["latency"]
        neg, pos = lat.get("negatives", {}), lat.get("positives", {})
        lines.append(
            f"| {n} | {fmt(neg.get('seconds_mean'))} | {fmt(neg.get('decode_tokens_mean'))} / "
            f"{fmt(neg.get('decode_tokens_max'))} | {fmt(pos.get('seconds_mean'))} | "
            f"{fmt(pos.get('decode_tokens_mean'))} / {fmt(pos.get('decode_tokens_max'))} |"
        )
    return "\n".join(lines) + "\n"


def plot_languages(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["decomposers"])
    langs = sorted(result["decomposers"][names[0]]["by_language"])
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(8, len(langs) * 0.9), 4))
    for i, n in enumerate(names):
        by = result["decomposers"][n]["by_language"]
        ax.bar(
            [x + i * width for x in range(len(langs))],
            [by[lang]["parallelizable_f1"] or 0.0 for lang in langs],
            width,
            label=n,
        )
    ax.axhline(0.85, color="grey", ls="--", lw=0.8, label="target 0.85")
    ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(langs))], langs)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("parallelizable F1")
    ax.set_title(f"parallelizable F1 by language, {Path(result['split']).name}")
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="outputs/data/default/test.jsonl")
    parser.add_argument("--decomposer", action="append", required=True, help="NAME=BACKEND[,key=value...]")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    from models.decomposer import DecomposerError, PromptError, load_decomposer
    from models.decomposer.batch import run_file

    try:
        specs = [parse_spec(s) for s in args.decomposer]
        gold_records = load_split(args.split)
    except ValueError as err:  # ConfigError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    gold = {r.id: r.model_dump() for r in gold_records}
    items = [(r.id, r.prompt) for r in gold_records]
    (args.out / "pred").mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "split": args.split,
        "count": len(gold),
        "gold_positives": sum(r.parallelizable for r in gold_records),
        "machine": machine_description(),
        "command": "python -m eval.decomposer.evaluate " + " ".join(argv if argv is not None else sys.argv[1:]),
        "decomposers": {},
    }
    for name, backend, options in specs:
        pred = args.out / "pred" / f"{name}.jsonl"
        done = {row["id"] for row in read_jsonl_repairing(pred)}
        if set(gold) - done:
            print(f"[{name}] {len(set(gold) - done)} prompts to decompose ({backend})", file=sys.stderr)
            try:
                if backend != "rules":
                    options.setdefault("model", DEFAULT_DECOMPOSER)
                decomposer = load_decomposer(backend, max_new_tokens=args.max_new_tokens, **options)
                options["threshold"] = decomposer.threshold if decomposer.gate else None
                run_file(decomposer, items, pred, args.batch_size)
            except (DecomposerError, PromptError) as err:
                print(f"error: {name}: {err}", file=sys.stderr)
                return 2
            del decomposer
            gc.collect()
        metrics = evaluate_predictions(load_records(pred), gold)
        metrics["latency"] = latency(sidecar(pred, "meta"), gold)
        if "threshold" not in options and options.get("gate", True) and backend != "rules":  # a resumed run
            calibration = read_calibration(options.get("adapter"))
            options["threshold"] = calibration["threshold"] if calibration else DEFAULT_THRESHOLD
        metrics["gate"] = gate_points(sidecar(pred, "meta"), gold, options.get("threshold"))
        metrics["options"] = {"backend": backend, **options}
        result["decomposers"][name] = metrics
    atomic_write_text(args.out / "results.json", json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(args.out / "report.md", report(result))
    plot_languages(result, args.out / "f1_by_language.png")
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
