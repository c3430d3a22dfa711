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
    early_stopping_patience: int | None = field(
        default=None,
        metadata={
            "help": "Stop after this many evaluations without improvement of metric_for_best_model "
            "(needs load_best_model_at_end). None: train for the configured epochs / steps."
        },
    )
    eval_gate_only: bool = field(
        default=False,
        metadata={
            "help": "Evaluate on the validation completions cut right after the decision token: the gate "
            "metrics (eval_gate_*) on the whole split at a fraction of the cost; eval_loss then covers "
            "only the opening tokens."
        },
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
