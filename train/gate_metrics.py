"""Validation metrics of the decision gate, computed inside the Trainer's evaluation.

The evaluation pass already runs every validation example teacher-forced; the logit
that predicts the completion's decision token (`true` / `false` right after
`{"parallelizable":`) is exactly what the decomposer's gate reads at inference. So
`preprocess_logits_for_metrics` keeps only that pair per example, and `compute_metrics`
turns them into parallelizable precision / recall / F1 (at 0.5 and at the target
precision) and average precision: the learning curve of the detector, at no extra
forward pass. Logged as `eval_gate_*`; `eval_gate_ap` can drive early stopping.
"""

from __future__ import annotations

import logging

import torch

from data_prep.formatting import DecisionTokens, decision_tokens
from models.calibration import (
    DEFAULT_TARGET_PRECISION,
    DEFAULT_THRESHOLD,
    average_precision,
    choose_threshold,
    point,
    two_way_probability,
)

IGNORE = -100
logger = logging.getLogger(__name__)


def decision_rows(logits: torch.Tensor, labels: torch.Tensor, d: DecisionTokens) -> torch.Tensor:
    """Per example: (logprob of true, logprob of false, label 1/0), or NaNs when the
    completion does not open with the decision prefix (e.g. a custom format)."""
    k = len(d.prefix_ids)
    prefix = torch.tensor(d.prefix_ids, device=labels.device)
    rows = []
    for b in range(labels.shape[0]):
        where = (labels[b] != IGNORE).nonzero()
        if len(where) == 0:
            rows.append([float("nan")] * 3)
            continue
        c0 = int(where[0])
        j = c0 + k  # the decision token's index; the logit at j - 1 predicts it
        if j >= labels.shape[1] or not torch.equal(labels[b, c0:j], prefix):
            rows.append([float("nan")] * 3)
            continue
        lp = logits[b, j - 1].float().log_softmax(-1)
        token = int(labels[b, j])
        rows.append([float(lp[d.true_id]), float(lp[d.false_id]), float(token == d.true_id)])
    return torch.tensor(rows)


def make_gate_metrics(tokenizer, target_precision: float = DEFAULT_TARGET_PRECISION):
    """(preprocess_logits_for_metrics, compute_metrics) for a Trainer; (None, None) for a
    tokenizer without single decision tokens (the gate cannot be read from it)."""
    try:
        d = decision_tokens(tokenizer)
    except ValueError as err:
        logger.warning("no gate metrics: %s", err)
        return None, None

    def preprocess(logits, labels):
        if isinstance(logits, tuple):
            logits = logits[0]
        return decision_rows(logits, labels, d)

    def compute(eval_pred) -> dict[str, float]:
        rows = torch.as_tensor(eval_pred.predictions).reshape(-1, 3)
        rows = rows[~torch.isnan(rows).any(-1)]
        if len(rows) == 0:
            return {}
        labels = [bool(y) for y in rows[:, 2].tolist()]
        probs = [two_way_probability(t, f) for t, f in rows[:, :2].tolist()]
        at_half = point(labels, probs, DEFAULT_THRESHOLD)
        chosen, met = choose_threshold(labels, probs, target_precision)
        return {
            "gate_ap": average_precision(labels, probs),
            "gate_precision": at_half.precision,
            "gate_recall": at_half.recall,
            "gate_f1": at_half.f1,
            "gate_recall_at_target": chosen.recall if met else 0.0,
            "gate_threshold_at_target": chosen.threshold,
        }

    return preprocess, compute
