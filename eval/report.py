"""Figures, tables and plots of an end-to-end run (`python -m eval.e2e ... --stage report`).

Definitions (per prompt, on one answer backend):
- pipeline time = decomposer time + (parallel run if the decomposer split the prompt,
  else the serial run): a prompt the decomposer calls serial costs the decomposer's time;
- raw speedup = serial time / pipeline time;
- normalised speedup = (serial time / serial output tokens) / (pipeline time / parallel
  output tokens), ParallelPrompt's definition, with the decomposer's time counted;
- execution speedup = serial time / parallel run time, on split prompts only;
- throughput ratio (the scaling plot) = parallel output tokens/s / serial output tokens/s;
- judged: "same" when the pipeline's answer is the serial one (not split, or identical
  text), else the judge's verdict for the parallel answer (win / tie / loss, both orders);
  retention = (win + tie + same) / prompts; agreement = judged pairs whose two orders
  raw picks agree / judged pairs; "A" rate = raw picks of the first position / picks
  (0.5 for an unbiased judge); the verdict itself averages both orders' probabilities;
  preference = mean of P(parallel better) - P(serial better) over judged pairs;
- a decomposition with more sub-prompts than `answer.max_branches` runs serially (counted
  in "split/prompts" as not split, and as over the limit in results.json);
- cut: answers that hit the token budget (serial_max_new_tokens / branch_max_new_tokens).
Groups average speedups geometrically; "total" is the ratio of summed times.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

from data_prep.jsonl_io import atomic_write_text, read_jsonl_repairing
from data_prep.schema import Record
from eval.config import E2EConfig
from eval.e2e import Workdir, answer_pair, gold_group, pair_key, parallel_run, runs_parallel


def _geomean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x and x > 0]
    return round(math.exp(sum(map(math.log, xs)) / len(xs)), 3) if xs else None


def prompt_rows(cfg: E2EConfig, subset: list[Record], decomps, answers, verdicts) -> list[dict[str, Any]]:
    rows = []
    for name, per_prompt in decomps.items():
        for backend, (serial, parallel) in answers.items():
            for rec in subset:
                pred, dec_s = per_prompt[rec.id]
                s = serial.get(rec.id)
                fits = runs_parallel(pred, cfg)
                run = parallel_run(cfg, pred, parallel)
                if s is None or (fits and run is None):
                    continue  # not run yet
                serial_s, serial_tok = s["seconds"], s["tokens"][0]
                exec_s, out_tok = (run["seconds"], sum(run["tokens"])) if run else (serial_s, serial_tok)
                pipeline_s = dec_s + exec_s
                row = {
                    "decomposer": name,
                    "backend": backend,
                    "id": rec.id,
                    "language": rec.language,
                    "category": gold_group(rec),
                    "split": bool(run),
                    "over_branch_limit": pred.parallelizable and not fits,
                    "branches": len(run["texts"]) if run else 1,
                    "decomposer_s": round(dec_s, 3),
                    "serial_s": serial_s,
                    "serial_tokens": serial_tok,
                    "parallel_s": run["seconds"] if run else None,
                    "parallel_tokens": out_tok if run else None,
                    "pipeline_s": round(pipeline_s, 3),
                    "speedup_raw": round(serial_s / pipeline_s, 3),
                    "speedup_norm": round((serial_s / serial_tok) / (pipeline_s / out_tok), 3),
                    "speedup_exec": round(serial_s / run["seconds"], 3) if run else None,
                    "throughput_ratio": round((out_tok / run["seconds"]) / (serial_tok / serial_s), 3) if run else None,
                    "serial_cut": serial_tok >= cfg.answer.serial_max_new_tokens,
                    "branch_cut": bool(run) and max(run["tokens"]) >= cfg.answer.branch_max_new_tokens,
                    "verdict": None,
                    "agree": None,
                }
                if cfg.judge is not None and backend == cfg.judge.answers_from:
                    s_text, p_text, same = answer_pair(pred, s, run)
                    if same:
                        row["verdict"] = "same"
                    elif (v := verdicts.get(pair_key(rec.prompt, s_text, p_text))) is not None:
                        row["verdict"], row["agree"], row["picks_a"] = v["verdict"], v["agree"], v["picks"].count("A")
                        row["preference"] = round(v["p_win"] - v["p_loss"], 4)
                rows.append(row)
    return rows


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    split = [r for r in rows if r["split"]]
    verdicts = [r["verdict"] for r in rows if r["verdict"] is not None]
    judged = [r for r in rows if r["agree"] is not None]
    counts = {v: verdicts.count(v) for v in ("win", "tie", "loss", "same")}
    return {
        "prompts": len(rows),
        "split": len(split),
        "speedup_raw": _geomean([r["speedup_raw"] for r in rows]),
        "speedup_norm": _geomean([r["speedup_norm"] for r in rows]),
        "speedup_raw_split": _geomean([r["speedup_raw"] for r in split]),
        "speedup_exec_split": _geomean([r["speedup_exec"] for r in split]),
        "speedup_total": round(sum(r["serial_s"] for r in rows) / sum(r["pipeline_s"] for r in rows), 3)
        if rows
        else None,
        "over_branch_limit": sum(r["over_branch_limit"] for r in rows),
        "serial_cut": sum(r["serial_cut"] for r in rows),
        "branch_cut": sum(r["branch_cut"] for r in rows),
        "decomposer_s_mean": round(sum(r["decomposer_s"] for r in rows) / len(rows), 3) if rows else None,
        **counts,
        "with_verdict": len(verdicts),
        "retention": round((counts["win"] + counts["tie"] + counts["same"]) / len(verdicts), 3) if verdicts else None,
        "judged": len(judged),
        "agreement": round(sum(r["agree"] for r in judged) / len(judged), 3) if judged else None,
        "preference": round(sum(r["preference"] for r in judged) / len(judged), 4) if judged else None,
        "picks_a": round(sum(r["picks_a"] for r in judged) / (2 * len(judged)), 3) if judged else None,
    }


def build_results(cfg: E2EConfig, gold, subset, decomps, answers, work: Workdir, config_path: str) -> dict[str, Any]:
    from eval.decomposition import evaluate_predictions

    gold_by_id = {r.id: r.model_dump() for r in gold}
    quality = {}
    for spec in cfg.decomposers:
        if spec.backend == "gold":
            preds = gold_by_id
        else:
            preds = {r["id"]: r for r in read_jsonl_repairing(work.decompositions("quality", spec.name))}
        quality[spec.name] = evaluate_predictions(preds, gold_by_id)
    verdicts = {v["key"]: v for v in read_jsonl_repairing(work.judge)}
    from eval.e2e import control_pairs

    controls = [verdicts[k] for k in control_pairs(cfg, subset, answers) if k in verdicts]
    rows = prompt_rows(cfg, subset, decomps, answers, verdicts)
    groups: dict[str, dict[str, Any]] = {"overall": {}, "by_category": {}, "by_language": {}}
    keyed: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        keyed[(r["decomposer"], r["backend"])].append(r)
    for (name, backend), rs in keyed.items():
        system = f"{name}@{backend}"
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
        "commit": _git_commit(),
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
        "prompts": rows,
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except OSError:
        return None


def machine_description() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.machine()} CPU, {os.cpu_count()} cores, no GPU"


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
        f"- split: `{cfg['split']}` ({res['split_size']} prompts for decomposition quality; "
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
    from eval.decomposition import COLUMNS

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
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    lines += ["", "## Definitions", "", __doc__.split("Definitions (per prompt, on one answer backend):")[1].strip()]
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
            if r["split"] and f"{r['decomposer']}@{r['backend']}" == s
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
        s for s in systems if any(r["verdict"] for r in res["prompts"] if f"{r['decomposer']}@{r['backend']}" == s)
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
    plots = plot(res, out)
    atomic_write_text(out / "report.md", markdown(res, plots))
    return out
