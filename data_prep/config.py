"""Data-build configuration (`configs/data/*.yaml`), parsed strictly: unknown keys,
wrong types and impossible values are errors that name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


M = TypeVar("M", bound=BaseModel)


class SourceConfig(StrictModel):
    kind: Literal["schema_jsonl", "parallelprompt_json", "parallelprompt_hub"]
    path: str = Field(description="file, directory, local parquet, or (hub kind) a Hub dataset id")
    split: str | None = None  # hub only
    limit: int | None = Field(default=None, ge=1)  # hub only
    repair: bool = True
    # Extra training data: deduplicated against every source listed before it (so nothing
    # near a validation or test prompt gets in), then added to the train split only, which
    # leaves the other sources' split assignment unchanged.
    train_only: bool = False

    @model_validator(mode="after")
    def _hub_options_only_for_hub(self) -> SourceConfig:
        if self.kind != "parallelprompt_hub" and (self.split is not None or self.limit is not None):
            raise ValueError(f"split and limit apply to kind parallelprompt_hub only, not {self.kind}")
        return self


class DedupConfig(StrictModel):
    near_threshold: float = Field(default=0.85, gt=0.0, le=1.0)
    num_perm: int = Field(default=128, ge=16)
    shingle: int = Field(default=5, ge=1)


class SplitConfig(StrictModel):
    train: float = Field(default=0.8, ge=0.0)
    validation: float = Field(default=0.1, ge=0.0)
    test: float = Field(default=0.1, ge=0.0)

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1 (train + validation + test = {total:g})")
        return self

    def fractions(self) -> dict[str, float]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


class DataConfig(StrictModel):
    name: str
    output_dir: str
    seed: int = 42
    sources: list[SourceConfig] = Field(min_length=1)
    dedup: DedupConfig = DedupConfig()
    splits: SplitConfig = SplitConfig()
    # output format of the SFT completions (data_prep.formatting.FORMATS)
    completion_format: Literal["anchor-v2", "anchor-v1", "json-v2"] = "anchor-v2"


class ConfigError(ValueError):
    pass


def load_yaml_config(path: str | Path, model: type[M], what: str, overrides: dict[str, object] | None = None) -> M:
    """A YAML file validated into a strict pydantic `model`; ConfigError naming every bad key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    raw.update(overrides or {})
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        lines = [f"{'.'.join(str(x) for x in e['loc']) or '(top)'}: {e['msg']}" for e in err.errors()]
        raise ConfigError(f"{path}: invalid {what} config:\n  " + "\n  ".join(lines)) from None


def load_data_config(path: str | Path, overrides: dict[str, object] | None = None) -> DataConfig:
    return load_yaml_config(path, DataConfig, "data", overrides)
