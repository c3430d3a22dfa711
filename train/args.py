"""Script arguments for train/sft.py, parsed with TRL's `TrlParser` next to TRL's own
`SFTConfig` and `ModelConfig` (YAML config + command-line overrides; unknown keys are errors)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DecomposerDataArguments:
    dataset_path: str = field(
        default="outputs/data/default/sft",
        metadata={"help": "A DatasetDict saved by `python -m data_prep.build` (its `sft/` folder)."},
    )
    data_config: str | None = field(
        default="configs/data/default.yaml",
        metadata={"help": "Data config to build the data set from when `dataset_path` does not exist yet."},
    )
    train_split: str = field(default="train")
    eval_split: str = field(default="validation")
    max_train_samples: int | None = field(default=None, metadata={"help": "Use the first N training examples."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on the first N examples."})
    balance_positive_fraction: float | None = field(
        default=None,
        metadata={
            "help": "Repeat training negatives (seeded draw) until positives are at most this fraction of the "
            "training split (e.g. 0.5). Real traffic is ~10% positive; the labelled data is not."
        },
    )
    decision_loss_weight: float = field(
        default=1.0,
        metadata={
            "help": 'Count the decision token (`"parallelizable": true|false`) this many times in the training '
            "loss (train.decision_loss); 1: the plain token mean."
        },
    )
    gate_eval_steps: int | None = field(
        default=None,
        metadata={
            "help": "Every N optimizer steps (and at the last), the decision gate's precision / recall on the "
            "whole eval split (train.gate_metrics): one prefill per prompt, logged as eval_gate_*."
        },
    )
    gate_patience: int | None = field(
        default=None,
        metadata={"help": "Stop when the gate's validation average precision has not risen for N gate evaluations."},
    )
    train_source_caps: str | None = field(
        default=None,
        metadata={
            "help": "Use at most N training examples of a source (seeded draw), e.g. "
            "'parallelprompt-synthetic=60,parallelprompt-lmsys=60': fewer long English positives."
        },
    )
    lora_first_layer: int | None = field(
        default=None,
        metadata={
            "help": "Adapt only decoder layers >= this index (PEFT layers_to_transform): backward then stops "
            "at that layer. None: every layer."
        },
    )
    init_adapter: str | None = field(
        default=None,
        metadata={
            "help": "Warm start: load this trained adapter's LoRA weights before training (same lora_r, "
            "target modules and lora_first_layer), with a fresh optimizer and learning-rate schedule."
        },
    )
