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
