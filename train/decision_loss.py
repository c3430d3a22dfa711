"""A heavier loss on the decision token: `"parallelizable": true|false`.

The decomposition JSON is ~100 completion tokens and the decision is one of them, so under
the plain token-mean loss the gate learns slowly: after 112 optimizer steps the adapter's
P(true) sat between 0.27 and 0.57 on every prompt, training prompts included (the rest
of the JSON was 95% top-1). `DecisionWeightedSFTTrainer` multiplies that one token's
negative log-likelihood by `decision_loss_weight` and leaves every other token, the
normalisation (TRL's `num_items_in_batch`) and TRL's metrics as they are.

It works with TRL's fused LM head (per-token log-probabilities, no full logits): the
model's output is reweighted on its way into `SFTTrainer.compute_loss`, so there is no
second forward pass.
"""

from __future__ import annotations

import logging

import torch
from trl import SFTTrainer

from data_prep.config import ConfigError
from data_prep.formatting import decision_tokens

logger = logging.getLogger(__name__)


def check_weight(weight: float) -> None:
    if not weight >= 1.0:
        raise ConfigError(f"decision_loss_weight must be >= 1, not {weight}")


def decision_positions(labels: torch.Tensor, prefix_ids: list[int], decision_ids: tuple[int, int]) -> torch.Tensor:
    """A (batch, seq-1) float mask over the shifted labels (the fused head's layout):
    1 where the label is the decision token, that is the token right after the decision
    prefix that opens the completion; 0 elsewhere. A row whose completion does not open
    with the prefix (another format, a truncated row) gets no position."""
    shifted = labels[:, 1:]
    mask = torch.zeros(shifted.shape, dtype=torch.float32, device=labels.device)
    n = len(prefix_ids)
    prefix = torch.tensor(prefix_ids, device=labels.device)
    for row in range(shifted.size(0)):
        valid = (shifted[row] != -100).nonzero()
        if not len(valid):
            continue
        start = int(valid[0])
        at = start + n
        if at >= shifted.size(1) or not torch.equal(shifted[row, start:at], prefix):
            continue
        if int(shifted[row, at]) in decision_ids:
            mask[row, at] = 1.0
    return mask


class _Reweighted:
    """Calls the model and scales the fused head's per-token log-probabilities by
    `weights` (so TRL's `-log_probs.sum() / num_items` becomes the weighted loss)."""

    def __init__(self, model, weights: torch.Tensor):
        self.model, self.weights = model, weights

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, *args, **kwargs):
        out = self.model(*args, **kwargs)
        if kwargs.get("fused_lm_head") and getattr(out, "log_probs", None) is not None:
            out.log_probs = out.log_probs * self.weights.to(out.log_probs.dtype)
        return out


class DecisionWeightedSFTTrainer(SFTTrainer):
    """`SFTTrainer` whose training loss counts the decision token `decision_loss_weight` times."""

    def __init__(self, *args, decision_loss_weight: float = 1.0, **kwargs):
        check_weight(decision_loss_weight)
        super().__init__(*args, **kwargs)
        self.decision_loss_weight = decision_loss_weight
        self._rows = self._found = 0
        if decision_loss_weight != 1.0:  # the plain loss needs no decision token (any tokenizer trains)
            d = decision_tokens(self.processing_class)
            self._prefix_ids, self._decision_ids = d.prefix_ids, (d.true_id, d.false_id)

    def weights(self, labels: torch.Tensor) -> torch.Tensor:
        found = decision_positions(labels, self._prefix_ids, self._decision_ids)
        self._rows += labels.size(0)
        self._found += int(found.sum())
        if self._rows == labels.size(0) or self._rows % 256 < labels.size(0):
            logger.info("decision token found in %d of %d training rows so far", self._found, self._rows)
        return 1.0 + (self.decision_loss_weight - 1.0) * found

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.decision_loss_weight != 1.0 and self.model.training and inputs.get("labels") is not None:
            model = _Reweighted(model, self.weights(inputs["labels"]))
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
