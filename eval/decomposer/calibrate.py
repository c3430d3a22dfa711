"""Calibrate the decomposer's decision gate on a labelled split and store the threshold
with the adapter.

    python -m eval.decomposer.calibrate --adapter artifacts/adapters/<name> \\
        [--data outputs/data/default/validation.jsonl] [--target-precision 0.95]

Scores every prompt with the gate (one prefill each: P("parallelizable": true)), draws
the precision/recall curve, picks the threshold with the most recall whose precision
reaches the target, and writes into the adapter folder: `decomposer_calibration.json`
(read by every decomposer backend), `calibration.md` (the operating point, per
language) and `pr_curve.png`. `--no-write` only reports. `--prior 0.1` computes precision
for traffic in which one prompt in ten is parallelizable (real chat traffic), from the split's
recall and false-positive rate, instead of for the split's own mix.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from data_prep.jsonl_io import atomic_write_text
from data_prep.schema import Record
from models.decomposer import DecomposerError, load_decomposer
from models.decomposer.calibration import (
    DEFAULT_TARGET_PRECISION,
    OperatingPoint,
    average_precision,
    choose_threshold,
    point,
    pr_curve,
    write_calibration,
)
from models.weights.registry import DEFAULT_DECOMPOSER


def score(decomposer, records: list[Record], batch_size: int = 8) -> list[float]:
    probs: list[float] = []
    for start in tqdm(range(0, len(records), batch_size), desc="gate", unit="batch"):
        probs += decomposer.decision_probs([r.prompt for r in records[start : start + batch_size]])
    return probs


def scores_from_training(path: Path, records: list[Record]) -> list[float]:
    """The probabilities a training run's gate evaluation wrote, matched to `records` by
    prompt; ValueError when a record has no score or a label disagrees."""
    by_prompt = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        by_prompt[row["prompt"]] = row
    probs = []
    for r in records:
        row = by_prompt.get(r.prompt)
        if row is None:
            raise ValueError(f"{path}: no score for record {r.id} (was the run evaluated on this split?)")
        if bool(row["label"]) != r.parallelizable:
            raise ValueError(f"{path}: the label of record {r.id} disagrees with {r.id}'s gold label")
        probs.append(float(row["p"]))
    return probs


def by_language(
    records: list[Record], probs: list[float], threshold: float, prior: float | None = None
) -> dict[str, OperatingPoint]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        groups[r.language].append(i)
    return {
        lang: point([records[i].parallelizable for i in idx], [probs[i] for i in idx], threshold, prior)
        for lang, idx in sorted(groups.items())
    }


def plot_pr(
    labels: list[bool], probs: list[float], chosen: OperatingPoint, path: Path, title: str, prior: float | None = None
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = pr_curve(labels, probs, prior)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.step([op.recall for op in curve], [op.precision for op in curve], where="post", label="gate")
    ax.plot([chosen.recall], [chosen.precision], "o", color="tab:red", label=f"chosen t={chosen.threshold:.3f}")
    half = point(labels, probs, 0.5, prior)
    ax.plot([half.recall], [half.precision], "s", color="tab:grey", label="t=0.5")
    ax.set_xlabel("recall (parallelizable)")
    ax.set_ylabel("precision (parallelizable)")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def render(
    name: str,
    data: str,
    target: float,
    chosen: OperatingPoint,
    met: bool,
    ap: float,
    langs: dict,
    half,
    prior: float | None = None,
) -> str:
    seen = (
        "the split's own share of parallelizable prompts"
        if prior is None
        else f"traffic with {prior:g} of its prompts parallelizable (from the split's recall and false-positive rate)"
    )
    lines = [
        f"# Gate calibration: `{name}`",
        "",
        f"Precision as seen by {seen}.",
        "",
        f"Split `{data}`, target precision {target}: threshold **{chosen.threshold:.4f}** "
        f"({'target met' if met else 'target NOT met: the most precise point is used'}); "
        f"average precision {ap:.3f}.",
        "",
        "| operating point | threshold | precision | recall | F1 | split |",
        "|---|---:|---:|---:|---:|---:|",
        f"| chosen | {chosen.threshold:.4f} | {chosen.precision:.3f} | {chosen.recall:.3f} | {chosen.f1:.3f} | "
        f"{chosen.predicted} |",
        f"| 0.5 | 0.5 | {half.precision:.3f} | {half.recall:.3f} | {half.f1:.3f} | {half.predicted} |",
        "",
        "## At the chosen threshold, by language",
        "",
        "| language | precision | recall | F1 | split |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {k} | {v.precision:.3f} | {v.recall:.3f} | {v.f1:.3f} | {v.predicted} |" for k, v in langs.items()]
    return "\n".join(lines) + "\n"


CARD_START, CARD_END = "<!-- decision-gate -->", "<!-- /decision-gate -->"


def learning_curve(adapter: Path) -> list[dict[str, Any]]:
    """The gate's validation metrics at each evaluation of the training run (trainer_state.json)."""
    state = adapter / "trainer_state.json"
    if not state.is_file():
        return []
    history = json.loads(state.read_text(encoding="utf-8"))["log_history"]
    return [e for e in history if "eval_gate_f1" in e]


def card_section(adapter: Path, report_md: str) -> str:
    lines = [CARD_START, "## Decision gate", ""]
    curve = learning_curve(adapter)
    if curve:
        lines += [
            "Validation learning curve (every evaluation of the training run; threshold 0.5 unless said):",
            "",
            "| step | parallelizable F1 | precision | recall | average precision | recall at precision 0.95 |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {e['step']} | {e['eval_gate_f1']:.3f} | {e['eval_gate_precision']:.3f} | {e['eval_gate_recall']:.3f} | "
            f"{e['eval_gate_ap']:.3f} | {e['eval_gate_recall_at_target']:.3f} |"
            for e in curve
        ]
        lines += ["", "![learning curve](loss_curves.png)", ""]
    body = report_md.split("\n", 2)[2] if report_md.startswith("# ") else report_md  # without its title
    lines += [
        "Calibration (`python -m eval.decomposer.calibrate`), stored in `decomposer_calibration.json`:",
        "",
        body.strip(),
    ]
    lines += ["", "![precision / recall](pr_curve.png)", "", CARD_END]
    return "\n".join(lines) + "\n"


def update_card(adapter: Path, report_md: str) -> None:
    """Write (or replace) the decision-gate section of the adapter's model card."""
    card = adapter / "README.md"
    text = card.read_text(encoding="utf-8") if card.is_file() else ""
    if CARD_START in text and CARD_END in text:
        head, rest = text.split(CARD_START, 1)
        text = head + rest.split(CARD_END, 1)[1].lstrip("\n")
    atomic_write_text(card, text.rstrip("\n") + "\n\n" + card_section(adapter, report_md))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", help="LoRA adapter folder (omit for the untrained base: report only)")
    parser.add_argument("--model", default=DEFAULT_DECOMPOSER)
    parser.add_argument("--data", default="outputs/data/default/validation.jsonl")
    parser.add_argument("--target-precision", type=float, default=DEFAULT_TARGET_PRECISION)
    parser.add_argument("--backend", default="hf", choices=["hf", "vllm"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--prior",
        type=float,
        help="share of parallelizable prompts in the traffic the threshold is for (real chat traffic: ~0.1); "
        "precision is computed for it (default: the split's own share)",
    )
    parser.add_argument("--no-write", action="store_true", help="report only; leave the adapter folder as it is")
    parser.add_argument(
        "--scores",
        type=Path,
        help="reuse the gate scores of the training run's last gate evaluation "
        "(<adapter>/gate_scores/step-N.jsonl, the same prefill) instead of scoring the split again",
    )
    args = parser.parse_args(argv)
    if not 0.0 < args.target_precision <= 1.0:
        parser.error("--target-precision must be in (0, 1]")
    if args.prior is not None and not 0.0 < args.prior < 1.0:
        parser.error("--prior must be in (0, 1)")
    data = Path(args.data)
    if not data.is_file():
        parser.error(f"{data} not found: build the data set first (python -m data_prep.build --config ...)")
    records = [Record.model_validate_json(line) for line in data.read_text(encoding="utf-8").splitlines() if line]
    if not any(r.parallelizable for r in records) or all(r.parallelizable for r in records):
        parser.error(f"{data} needs both parallelizable and serial records to calibrate on")
    if args.scores:
        try:
            probs = scores_from_training(args.scores, records)
        except (OSError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    else:
        try:
            decomposer = load_decomposer(args.backend, model=args.model, adapter=args.adapter)
        except DecomposerError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        probs = score(decomposer, records, args.batch_size)
    labels = [r.parallelizable for r in records]
    chosen, met = choose_threshold(labels, probs, args.target_precision, args.prior)
    ap = average_precision(labels, probs, args.prior)
    half = point(labels, probs, 0.5, args.prior)
    langs = by_language(records, probs, chosen.threshold, args.prior)
    name = args.adapter or f"{args.model} (untrained)"
    report = render(name, str(data), args.target_precision, chosen, met, ap, langs, half, args.prior)
    print(report)
    if args.adapter and not args.no_write:
        out = Path(args.adapter)
        write_calibration(
            out,
            chosen,
            met,
            target_precision=args.target_precision,
            split=str(data),
            examples=len(records),
            extra={"average_precision": round(ap, 4), "prior": args.prior},
        )
        atomic_write_text(out / "calibration.md", report)
        scores = [
            {"id": r.id, "label": r.parallelizable, "p": round(p, 6)} for r, p in zip(records, probs, strict=True)
        ]
        atomic_write_text(out / "calibration_scores.jsonl", "".join(json.dumps(s) + "\n" for s in scores))
        plot_pr(
            labels, probs, chosen, out / "pr_curve.png", f"gate on {data.stem}: {Path(args.adapter).name}", args.prior
        )
        update_card(out, report)
        print(f"wrote {out}/decomposer_calibration.json, calibration.md, pr_curve.png; model card updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
