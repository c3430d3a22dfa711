"""The heavier decision-token loss (train/decision_loss.py) on the tiny random Qwen2: it
finds exactly the `true`/`false` label after the decision prefix, and the weighted loss
is the plain loss plus (w - 1) x that token's NLL over the batch's tokens, nothing else."""

from __future__ import annotations

import pytest
import torch

from data_prep.formatting import decision_tokens
from train.decision_loss import DecisionWeightedSFTTrainer, decision_positions


@pytest.fixture(scope="module")
def trainer(tiny_model_dir, tiny_tokenizer, built_default, tmp_path_factory):
    import datasets
    from trl import SFTConfig

    ds = datasets.load_from_disk(str(built_default[0] / "sft"))["train"].select(range(6))
    ds = ds.select_columns(["prompt", "completion"])
    args = SFTConfig(
        output_dir=str(tmp_path_factory.mktemp("decision-loss")),
        use_cpu=True,
        report_to="none",
        max_length=2048,
        per_device_train_batch_size=3,
        bf16=False,
    )
    return DecisionWeightedSFTTrainer(
        model=str(tiny_model_dir),
        args=args,
        train_dataset=ds,
        processing_class=tiny_tokenizer,
        decision_loss_weight=5.0,
    )


def batch_of(trainer):
    batch = next(iter(trainer.get_train_dataloader()))
    return {k: v.to(trainer.model.device) if torch.is_tensor(v) else v for k, v in batch.items()}


def test_one_position_per_row_and_it_holds_the_decision(trainer, tiny_tokenizer):
    d = decision_tokens(tiny_tokenizer)
    labels = batch_of(trainer)["labels"]
    mask = decision_positions(labels, d.prefix_ids, (d.true_id, d.false_id))
    assert mask.shape == (labels.size(0), labels.size(1) - 1)
    assert mask.sum(dim=1).tolist() == [1.0] * labels.size(0)
    picked = labels[:, 1:][mask.bool()].tolist()
    assert set(picked) <= {d.true_id, d.false_id}
    # the tokens just before each picked one are the decision prefix
    for row in range(labels.size(0)):
        at = int(mask[row].nonzero()[0])
        assert labels[row, 1:][at - len(d.prefix_ids) : at].tolist() == d.prefix_ids


def test_rows_without_the_prefix_get_no_weight(tiny_tokenizer):
    d = decision_tokens(tiny_tokenizer)
    masked = torch.full((1, 8), -100)
    other = torch.tensor([[-100, -100, 5, 6, 7, 8, 9, 10]])  # a completion that opens otherwise
    for labels in (masked, other):
        assert decision_positions(labels, d.prefix_ids, (d.true_id, d.false_id)).sum() == 0


def test_weighted_loss_adds_the_decision_nll_only(trainer, tiny_tokenizer):
    d = decision_tokens(tiny_tokenizer)
    batch = batch_of(trainer)
    model = trainer.model
    model.train()
    n_tokens = int((batch["labels"][:, 1:] != -100).sum())
    trainer.decision_loss_weight = 1.0
    with torch.no_grad():
        plain = trainer.compute_loss(model, dict(batch), num_items_in_batch=n_tokens)
        trainer.decision_loss_weight = 5.0
        weighted = trainer.compute_loss(model, dict(batch), num_items_in_batch=n_tokens)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    logp = torch.log_softmax(logits, -1)
    shifted = batch["labels"][:, 1:]
    mask = decision_positions(batch["labels"], d.prefix_ids, (d.true_id, d.false_id)).bool()
    decision_nll = -logp[mask].gather(-1, shifted[mask].unsqueeze(-1)).sum()
    assert weighted.item() == pytest.approx(plain.item() + 4.0 * decision_nll.item() / n_tokens, rel=1e-4)
    assert weighted.item() > plain.item()
