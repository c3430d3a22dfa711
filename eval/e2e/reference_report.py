"""The reference-based part of an end-to-end report (configs with `references:`): each
system's serial and pipeline answers scored against gold (`eval.e2e.reference`), per
category and language, with retention and its bootstrap interval; table and plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eval.config import E2EConfig
from eval.e2e.reference import Scorer, load_references, summarize
from eval.e2e.workdir import answer_pair, parallel_run


def reference_results(cfg: E2EConfig, subset, decomps, answers) -> dict[str, Any]:
    """{system: {overall, by_category, by_language, prompts}}; a prompt the decomposer does
    not split is answered serially, so its pipeline score is the serial one."""
    refs = {r.record.id: r for r in load_references(cfg.references)}
    scorer = Scorer()
    cache: dict[tuple[str, str], list[float]] = {}

    def score(rid: str, text: str) -> list[float]:
        if (rid, text) not in cache:
            cache[(rid, text)] = scorer.item_scores(refs[rid], text)
        return cache[(rid, text)]

    out: dict[str, Any] = {}
    for name, per_prompt in decomps.items():
        for engine, (serial, parallel) in answers.items():
            rows = []
            for rec in subset:
                if rec.id not in serial or rec.id not in refs:
                    continue
                pred, _ = per_prompt[rec.id]
                run = parallel_run(cfg, pred, parallel)
                s_text, p_text, _ = answer_pair(pred, serial[rec.id], run)
                rows.append(
                    {
                        "id": rec.id,
                        "all": "all",
                        "language": rec.language,
                        "category": rec.category,
                        "split": run is not None,
                        "serial": score(rec.id, s_text),
                        "parallel": score(rec.id, p_text),
                    }
                )
            if rows:
                out[f"{name}@{engine}"] = {
                    "overall": summarize(rows, "all")["all"],
                    "by_category": summarize(rows, "category"),
                    "by_language": summarize(rows, "language"),
                    "split": sum(r["split"] for r in rows),
                    "prompts": rows,
                }
    return out


def _f(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"


def _row(label: str, m: dict[str, Any]) -> str:
    ci = "-" if m["retention"] is None else f"{m['retention']:.3f} [{m['low']:.3f}, {m['high']:.3f}]"
    return (
        f"| {label} | {m['prompts']} | {_f(m['serial'])} | {_f(m['parallel'])} | {_f(m['serial_coverage'])} | "
        f"{_f(m['parallel_coverage'])} | {ci} |"
    )


def reference_markdown(res: dict[str, Any]) -> list[str]:
    head = [
        "| group | prompts | serial score | pipeline score | serial coverage | pipeline coverage | retention [95% CI] |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    lines = [
        "## Reference-based quality (no judge)",
        "",
        "Each data item of a prompt is scored against its gold answers in the serial answer and in the "
        "pipeline's answer (the reassembled parallel answer when the decomposer splits, else the serial one): "
        "containment / token F1 (reading comprehension), gold entities found (NER), value found (keywords), "
        "chrF of the best line (translation, correction), the item's label (sentiment). Score = mean item score "
        "per prompt; coverage = share of items with a non-zero score; retention = pipeline / serial, with a "
        "paired bootstrap interval over prompts (2,000 draws).",
        "",
    ]
    for system, r in res.items():
        lines += [f"### {system} ({r['split']} of {r['overall']['prompts']} prompts split)", "", *head]
        lines.append(_row("**all**", r["overall"]))
        lines += [_row(k, m) for k, m in r["by_category"].items()]
        lines += [_row(k, m) for k, m in r["by_language"].items()]
        lines.append("")
    return lines


def plot_reference(res: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not res:
        return []
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for ax, split in zip(axes, ("by_category", "by_language"), strict=True):
        keys = sorted({k for r in res.values() for k in r[split]})
        width = 0.8 / len(res)
        for i, (system, r) in enumerate(res.items()):
            xs = [x + i * width for x in range(len(keys))]
            vals = [(r[split].get(k) or {}).get("retention") for k in keys]
            lows = [(r[split].get(k) or {}).get("low") for k in keys]
            highs = [(r[split].get(k) or {}).get("high") for k in keys]
            ys = [v or 0 for v in vals]
            err = [
                [(v - lo) if v is not None else 0 for v, lo in zip(vals, lows, strict=True)],
                [(hi - v) if v is not None else 0 for v, hi in zip(vals, highs, strict=True)],
            ]
            ax.bar(xs, ys, width, yerr=err, capsize=2, label=system)
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(keys))], keys, rotation=40, ha="right", fontsize=8)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_ylim(0, 2.5)  # a group with few prompts can have an interval far above; the table has it
        ax.set_title(f"reference-based retention {split.replace('_', ' ')} (95% bootstrap CI, axis cut at 2.5)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "reference_retention.png", dpi=120)
    plt.close(fig)
    return ["reference_retention.png"]
