"""The decision gate's calibration: precision/recall of "split when P(true) >= t", the
threshold for a target precision, and the file stored with an adapter.

Pure functions over (label, probability) pairs, shared by training (validation metrics
at every evaluation, `train.gate_metrics`) and `python -m eval.decomposer.calibrate` (the threshold
written next to the adapter, which `models.decomposer` reads).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CALIBRATION_FILE = "decomposer_calibration.json"
DEFAULT_THRESHOLD = 0.5
DEFAULT_TARGET_PRECISION = 0.95


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    precision: float
    recall: float
    f1: float
    predicted: int  # prompts split at this threshold


def two_way_probability(logprob_true: float, logprob_false: float) -> float:
    """P(true) renormalised over the two tokens the grammar allows at the decision."""
    m = max(logprob_true, logprob_false)
    a, b = math.exp(logprob_true - m), math.exp(logprob_false - m)
    return a / (a + b)


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def point(labels: list[bool], probs: list[float], threshold: float, prior: float | None = None) -> OperatingPoint:
    """Precision, recall and F1 of splitting every prompt with probability >= threshold.
    Precision is 1.0 when nothing is split (no false split was made).

    `prior`: the share of parallelizable prompts in the traffic the threshold is for, when
    it differs from the labelled set's (real chat traffic: about 0.1, a test split: 0.6).
    Precision is then the one that traffic would see, from the set's recall (true-positive
    rate) and false-positive rate: prior * TPR / (prior * TPR + (1 - prior) * FPR)."""
    tp = sum(1 for y, p in zip(labels, probs, strict=True) if p >= threshold and y)
    predicted = sum(1 for p in probs if p >= threshold)
    positives = sum(labels)
    recall = tp / positives if positives else 0.0
    if prior is None:
        precision = tp / predicted if predicted else 1.0
    else:
        negatives = len(labels) - positives
        fpr = (predicted - tp) / negatives if negatives else 0.0
        mass = prior * recall + (1 - prior) * fpr
        precision = prior * recall / mass if mass else 1.0
    return OperatingPoint(threshold, precision, recall, _f1(precision, recall), predicted)


def pr_curve(labels: list[bool], probs: list[float], prior: float | None = None) -> list[OperatingPoint]:
    """One operating point per distinct probability (each a candidate threshold), from
    the highest threshold (fewest splits) to the lowest."""
    return [point(labels, probs, t, prior) for t in sorted(set(probs), reverse=True)]


def average_precision(labels: list[bool], probs: list[float], prior: float | None = None) -> float:
    """Area under the precision/recall step curve (sum over recall steps of precision)."""
    ap, last_recall = 0.0, 0.0
    for op in pr_curve(labels, probs, prior):
        ap += (op.recall - last_recall) * op.precision
        last_recall = op.recall
    return ap


def choose_threshold(
    labels: list[bool],
    probs: list[float],
    target_precision: float = DEFAULT_TARGET_PRECISION,
    prior: float | None = None,
) -> tuple[OperatingPoint, bool]:
    """The operating point with the highest recall among those whose precision reaches
    the target (ties: the higher threshold), and whether the target was reached. When no
    point reaches it, the most precise point that splits anything (ties: more recall).
    Precision is the one traffic with `prior` parallelizable prompts would see (`point`)."""
    curve = [op for op in pr_curve(labels, probs, prior) if op.predicted]
    if not curve:
        return point(labels, probs, 1.0, prior), False
    ok = [op for op in curve if op.precision >= target_precision]
    if ok:
        return max(ok, key=lambda op: (op.recall, op.threshold)), True
    return max(curve, key=lambda op: (op.precision, op.recall)), False


def write_calibration(
    adapter_dir: str | Path,
    chosen: OperatingPoint,
    met: bool,
    *,
    target_precision: float,
    split: str,
    examples: int,
    extra: dict[str, Any] | None = None,
) -> Path:
    path = Path(adapter_dir) / CALIBRATION_FILE
    meta = {
        "threshold": chosen.threshold,
        "target_precision": target_precision,
        "target_met": met,
        "split": split,
        "examples": examples,
        "at_threshold": asdict(chosen),
        **(extra or {}),
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def read_calibration(adapter_dir: str | Path | None) -> dict[str, Any] | None:
    """The calibration stored with an adapter, or None. ValueError on a bad file."""
    if adapter_dir is None:
        return None
    path = Path(adapter_dir) / CALIBRATION_FILE
    if not path.is_file():
        return None
    meta = json.loads(path.read_text(encoding="utf-8"))
    t = meta.get("threshold")
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not 0.0 <= t <= 1.0:
        raise ValueError(f"{path}: threshold must be a number in [0, 1], not {t!r}")
    return meta
