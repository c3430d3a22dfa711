"""The decision gate's learning curve: its validation precision / recall during training.

Every `every` optimizer steps (and at the last step) `GateEvaluation` runs what the
decomposer's gate runs at inference on every validation prompt: one prefill of the chat
prompt plus `{"parallelizable":`, the last position's logits only
(`models.decomposer.prefill_decision_probs`), batched by length. It logs
`eval_gate_{ap,precision,recall,f1,recall_at_target,threshold_at_target}` through the
Trainer (so wandb and the loss plot see them) and writes each prompt's probability to
`<output_dir>/gate_scores/step-N.jsonl`, which `python -m eval.decomposer.calibrate --scores` can
reuse instead of scoring the split again. The Trainer's own evaluation (teacher-forced
full logits: TRL's fused LM head recomputes them with a second forward) costs several
times more on a CPU, so the recipes run this one instead.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from data_prep.formatting import DECISION_PREFIX, decision_tokens
from models.decomposer.calibration import (
    DEFAULT_TARGET_PRECISION,
    DEFAULT_THRESHOLD,
    average_precision,
    choose_threshold,
    point,
)

logger = logging.getLogger(__name__)


def gate_metrics(labels: list[bool], probs: list[float], target: float = DEFAULT_TARGET_PRECISION) -> dict[str, float]:
    at_half = point(labels, probs, DEFAULT_THRESHOLD)
    chosen, met = choose_threshold(labels, probs, target)
    return {
        "eval_gate_ap": average_precision(labels, probs),
        "eval_gate_precision": at_half.precision,
        "eval_gate_recall": at_half.recall,
        "eval_gate_f1": at_half.f1,
        "eval_gate_recall_at_target": chosen.recall if met else 0.0,
        "eval_gate_threshold_at_target": chosen.threshold,
    }


class GateEvaluation(TrainerCallback):
    """Set `trainer` after building the Trainer (the metrics are logged through it)."""

    def __init__(
        self, tokenizer, examples, every: int, output_dir: str, batch_size: int = 8, patience: int | None = None
    ):
        self.decision = decision_tokens(tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.every, self.batch_size, self.patience = every, batch_size, patience
        self.best, self.since_best = -1.0, 0
        self.out = Path(output_dir) / "gate_scores"
        self.rows, self.labels = [], []
        for ex in examples:
            ids = tokenizer.apply_chat_template(
                ex["prompt"], add_generation_prompt=True, tokenize=True, return_dict=False
            )
            self.rows.append(list(ids) + self.decision.prefix_ids)
            self.labels.append(ex["completion"][0]["content"].startswith(DECISION_PREFIX + "true"))
        self.prompts = [ex["prompt"][-1]["content"] for ex in examples]
        self.trainer = None

    def scores(self, model) -> list[float]:
        from models.decomposer.hf_backend import prefill_decision_probs

        order = sorted(range(len(self.rows)), key=lambda i: len(self.rows[i]))  # little padding per batch
        probs: dict[int, float] = {}
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            for i, p in zip(
                idx, prefill_decision_probs(model, [self.rows[i] for i in idx], self.pad_id, self.decision), strict=True
            ):
                probs[i] = p
        return [probs[i] for i in range(len(self.rows))]

    def evaluate(self, model, step: int) -> dict[str, Any]:
        was_training = model.training
        model.eval()
        try:
            probs = self.scores(model)
            metrics = gate_metrics(self.labels, probs)
            if self.trainer is not None:  # in eval mode: TRL's log() then leaves the training metrics alone
                self.trainer.log(metrics)
        finally:
            model.train(was_training)
        self.out.mkdir(parents=True, exist_ok=True)
        rows = [
            {"prompt": q, "label": y, "p": round(p, 6)}
            for q, y, p in zip(self.prompts, self.labels, probs, strict=True)
        ]
        (self.out / f"step-{step}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        logger.info("gate at step %d: %s", step, {k: round(v, 4) for k, v in metrics.items()})
        return metrics

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is None or (state.global_step % self.every and state.global_step != state.max_steps):
            return control
        ap = self.evaluate(model, state.global_step)["eval_gate_ap"]
        self.best, self.since_best = (ap, 0) if ap > self.best else (self.best, self.since_best + 1)
        if self.patience and self.since_best >= self.patience:  # validation AP stopped rising
            logger.info("gate AP has not improved for %d evaluations: stopping", self.patience)
            control.should_training_stop = True
        return control
