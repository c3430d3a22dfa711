"""Tables and plots of an end-to-end run (`python -m eval.e2e ... --stage report`); the
figures themselves (speedups, retention, aggregation) are computed in `eval.e2e.metrics`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from data_prep.jsonl_io import atomic_write_text, read_jsonl_repairing
from eval.config import E2EConfig
from eval.e2e import metrics as e2e_metrics
from eval.e2e.metrics import aggregate, prompt_rows
from eval.e2e.reference_report import plot_reference, reference_markdown, reference_results
from eval.e2e.workdir import Workdir, control_pairs
from eval.provenance import git_commit, machine_description


def build_results(cfg: E2EConfig, gold, subset, decomps, answers, work: Workdir, config_path: str) -> dict[str, Any]:
    from eval.decomposer.metrics import evaluate_predictions

    gold_by_id = {r.id: r.model_dump() for r in gold}
    quality = {}
    for spec in cfg.decomposers:
        if spec.backend == "gold":
            preds = gold_by_id
        else:
            preds = {r["id"]: r for r in read_jsonl_repairing(work.decompositions("quality", spec.name))}
        quality[spec.name] = evaluate_predictions(preds, gold_by_id)
    verdicts = {v["key"]: v for v in read_jsonl_repairing(work.judge)}
    pairs = control_pairs(cfg, subset, answers) if cfg.judge is not None else {}  # judge: null runs no judge
    controls = [verdicts[k] for k in pairs if k in verdicts]
    rows = prompt_rows(cfg, subset, decomps, answers, verdicts)
    groups: dict[str, dict[str, Any]] = {"overall": {}, "by_category": {}, "by_language": {}}
    keyed: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        keyed[(r["decomposer"], r["engine"])].append(r)
    for (name, engine), rs in keyed.items():
        system = f"{name}@{engine}"
        groups["overall"][system] = aggregate(rs)
        for split, field in (("by_category", "category"), ("by_language", "language")):
            parts: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for r in rs:
                parts[r[field]].append(r)
            groups[split][system] = {k: aggregate(v) for k, v in sorted(parts.items())}
    return {
        "date": dt.date.today().isoformat(),
        "name": cfg.name,
        "command": f"python -m eval.e2e --config {config_path}",
        "commit": git_commit(),
        "machine": machine_description(),
        "config": cfg.model_dump(),
        "split_size": len(gold),
        "subset_size": len(subset),
        "judge_control": {
            "pairs": len(controls),
            "loss": sum(v["verdict"] == "loss" for v in controls),  # the wrong answer rightly loses
            "p_loss_above_p_win": sum(v["p_loss"] > v["p_win"] for v in controls),
            "mean_preference": round(sum(v["p_win"] - v["p_loss"] for v in controls) / len(controls), 4)
            if controls
            else None,
        },
        "quality": quality,
        "e2e": groups,
        "reference": reference_results(cfg, subset, decomps, answers) if cfg.references else None,
        "prompts": rows,
    }


# ---------------------------------------------------------------- markdown + plots
def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v}"


def markdown(res: dict[str, Any], plots: list[str]) -> str:
    cfg = res["config"]
    lines = [
        f"# End-to-end evaluation: {res['name']} ({res['date']})",
        "",
        f"- command: `{res['command']}` (commit {res['commit']})",
        f"- machine: {res['machine']}",
        f"- split: `{cfg.get('references') or cfg['split']}` ({res['split_size']} prompts for decomposition quality; "
        f"{res['subset_size']} run end to end, stratified by category, seed {cfg['seed']})",
        f"- answer model: {cfg['answer']['model']} ({cfg['answer']['dtype']}), system prompt "
        f"{cfg['answer']['system_prompt']!r}; serial max {cfg['answer']['serial_max_new_tokens']} tokens, "
        f"branch max {cfg['answer']['branch_max_new_tokens']}",
        f"- judge: {cfg['judge']['model']} on {cfg['judge']['backend']}, answers from the "
        f"{cfg['judge']['answers_from']} backend"
        if cfg["judge"]
        else "- judge: none",
        "",
        "## End to end (speedups are geometric means; decomposer time counted)",
        "",
        "| system | split/prompts | raw | normalised | raw (split only) | execution (split only) | total time "
        "| decomposer s | win/tie/loss/same | retention | judge agreement | judge 'A' rate | preference | cut serial/parallel |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for system, m in res["e2e"]["overall"].items():
        lines.append(
            f"| {system} | {m['split']}/{m['prompts']} | {_fmt(m['speedup_raw'])} | {_fmt(m['speedup_norm'])} | "
            f"{_fmt(m['speedup_raw_split'])} | {_fmt(m['speedup_exec_split'])} | {_fmt(m['speedup_total'])} | "
            f"{_fmt(m['decomposer_s_mean'])} | {m['win']}/{m['tie']}/{m['loss']}/{m['same']} | "
            f"{_fmt(m['retention'])} | {_fmt(m['agreement'])} ({m['judged']}) | {_fmt(m['picks_a'])} | {_fmt(m['preference'])} | {m['serial_cut']}/{m['branch_cut']} |"
        )
    c = res["judge_control"]
    if c["pairs"]:
        lines += [
            "",
            f"Judge sanity check: against an answer to another prompt, the right answer won {c['loss']} of "
            f"{c['pairs']} pairs (it had the higher averaged probability in {c['p_loss_above_p_win']}; mean "
            f"preference for the wrong answer {c['mean_preference']}). A judge that cannot tell these apart "
            "cannot measure retention: read the retention columns with it.",
        ]
    for split, label in (("by_category", "gold category"), ("by_language", "language")):
        systems = list(res["e2e"][split])
        keys = sorted({k for s in systems for k in res["e2e"][split][s]})
        for metric, title in (("speedup_raw", "raw speedup"), ("retention", "retention")):
            lines += ["", f"### {title} by {label}", "", "| " + label + " | " + " | ".join(systems) + " |"]
            lines.append("|---" * (len(systems) + 1) + "|")
            for k in keys:
                cells = []
                for s in systems:
                    m = res["e2e"][split][s].get(k)
                    cells.append("-" if m is None or m[metric] is None else f"{m[metric]} (n={m['prompts']})")
                lines.append(f"| {k} | " + " | ".join(cells) + " |")
    from eval.decomposer.metrics import COLUMNS

    lines += ["", f"## Decomposition quality ({res['split_size']} prompts)", ""]
    lines += ["| decomposer | " + " | ".join(label for _, label in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for name, q in res["quality"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt(q["overall"][k]) for k, _ in COLUMNS) + " |")
    langs = sorted({lang for q in res["quality"].values() for lang in q["by_language"]})
    lines += ["", "### parallelizable F1 by language", "", "| decomposer | " + " | ".join(langs) + " |"]
    lines.append("|---" * (len(langs) + 1) + "|")
    for name, q in res["quality"].items():
        lines.append(
            f"| {name} | " + " | ".join(_fmt(q["by_language"][lang]["parallelizable_f1"]) for lang in langs) + " |"
        )
    if res.get("reference"):
        lines += ["", *reference_markdown(res["reference"])]
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    lines += [
        "",
        "## Definitions",
        "",
        e2e_metrics.__doc__.split("Definitions (per prompt, on one answer engine):")[1].strip(),
    ]
    return "\n".join(lines) + "\n"


def _grouped_bars(ax, series: dict[str, dict[str, float | None]], title: str, rotate: bool = True) -> None:
    """One bar per (group key, series), the groups side by side; a missing value draws as 0."""
    keys = sorted({k for values in series.values() for k in values})
    width = 0.8 / max(len(series), 1)
    for i, (label, values) in enumerate(series.items()):
        ax.bar([x + i * width for x in range(len(keys))], [values.get(k) or 0 for k in keys], width, label=label)
    ticks = [x + 0.4 - width / 2 for x in range(len(keys))]
    if rotate:
        ax.set_xticks(ticks, keys, rotation=40, ha="right", fontsize=8)
    else:
        ax.set_xticks(ticks, keys)
    ax.set_title(title)


def plot(res: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    systems = list(res["e2e"]["overall"])

    def bars(ax, split: str, metric: str, title: str, among: list[str]) -> None:
        _grouped_bars(ax, {s: {k: m[metric] for k, m in res["e2e"][split][s].items()} for s in among}, title)

    fig, ax = plt.subplots(figsize=(11, 4.5))
    bars(ax, "by_category", "speedup_raw", "raw speedup (pipeline, geometric mean) by gold category", systems)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "speedup_by_category.png", dpi=120)
    written.append("speedup_by_category.png")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s in systems:
        pts = [
            (r["branches"], r["throughput_ratio"])
            for r in res["prompts"]
            if r["split"] and f"{r['decomposer']}@{r['engine']}" == s
        ]
        if pts:
            ax.scatter(*zip(*pts, strict=True), label=s, alpha=0.7, s=18)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xlabel("branches (data items or n)")
    ax.set_ylabel("output tokens/s, parallel / serial")
    ax.set_title("throughput scaling with the number of branches (decomposer time excluded)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "scaling_n.png", dpi=120)
    written.append("scaling_n.png")

    judged = [
        s for s in systems if any(r["verdict"] for r in res["prompts"] if f"{r['decomposer']}@{r['engine']}" == s)
    ]
    if judged:
        fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
        bars(axes[0][0], "by_category", "retention", "quality retention by gold category", judged)
        bars(axes[0][1], "by_language", "retention", "quality retention by language", judged)
        bars(axes[1][0], "by_category", "preference", "judge preference for parallel, P(win) - P(loss)", judged)
        bars(axes[1][1], "by_language", "preference", "judge preference for parallel, P(win) - P(loss)", judged)
        for ax in axes[1]:
            ax.axhline(0.0, color="grey", lw=0.8)
        axes[0][1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "retention.png", dpi=120)
        written.append("retention.png")

    fig, ax = plt.subplots(figsize=(10, 4.5))
    f1 = {
        name: {lang: m["parallelizable_f1"] for lang, m in q["by_language"].items()}
        for name, q in res["quality"].items()
    }
    _grouped_bars(ax, f1, f"parallelizable F1 by language ({res['split_size']} prompts)", rotate=False)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "f1_by_language.png", dpi=120)
    written.append("f1_by_language.png")
    plt.close("all")
    return written


def write_report(res: dict[str, Any], cfg: E2EConfig) -> Path:
    out = Path(cfg.report_dir) / f"{res['date']}-{res['name']}"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps(res, indent=2, ensure_ascii=False) + "\n")
    plots = plot(res, out) + plot_reference(res.get("reference") or {}, out)
    atomic_write_text(out / "report.md", markdown(res, plots))
    return out
