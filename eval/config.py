"""End-to-end evaluation configuration (`configs/eval/*.yaml`), parsed strictly: unknown
keys, wrong types and impossible values are errors that name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from data_prep.config import StrictModel, load_yaml_config
from models.pipeline.config import AnswerConfig
from models.weights.registry import DEFAULT_DECOMPOSER, DEFAULT_JUDGE


class DecomposerSpec(StrictModel):
    """One system compared: the gold labels (oracle), the regex rules, or a model."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    backend: Literal["gold", "rules", "hf", "vllm", "openai"]
    model: str = DEFAULT_DECOMPOSER
    adapter: str | None = None
    fmt: Literal["anchor-v2", "anchor-v1", "json-v2"] | None = None  # default: the adapter's own, json-v2 without one
    gate: bool = True  # decide after one prefill (model backends); False: decode the whole output
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)  # default: the adapter's calibrated one
    max_new_tokens: int = Field(default=512, ge=16)
    base_url: str = "http://127.0.0.1:8000/v1"  # openai backend

    @model_validator(mode="after")
    def _model_options(self) -> DecomposerSpec:
        if self.backend in ("gold", "rules") and self.adapter:
            raise ValueError(f"adapter applies to model backends, not {self.backend}")
        return self


class JudgeConfig(StrictModel):
    model: str = DEFAULT_JUDGE
    backend: Literal["vllm", "hf"] = "vllm"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    max_chars: int = Field(default=3000, ge=100)  # per request / answer shown to the judge
    max_model_len: int = Field(default=6144, ge=512)
    kv_cache_gib: float = Field(default=2.0, gt=0.0)
    answers_from: Literal["executor", "vllm"] = "executor"  # whose parallel answers are judged
    tie_margin: float = Field(default=0.1, ge=0.0, le=1.0)  # |P(win) - P(loss)| below this is a tie


class E2EConfig(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    split: str  # gold schema records (JSONL): the held-out test split
    # A reference set (data/raw/reference: schema records + gold answers per item): when set,
    # it is the gold set instead of `split`, and the report scores serial and parallel answers
    # against its references (eval.e2e.reference).
    references: str | None = None
    work_dir: str  # per-prompt checkpoints; a rerun resumes here
    report_dir: str = "artifacts/eval/reports"  # the report goes to <report_dir>/<date>-<name>/
    limit: int | None = Field(default=None, ge=1)  # prompts run end to end (stratified by category)
    seed: int = 0
    quality_batch_size: int = Field(default=8, ge=1)  # decomposition quality runs the whole split, batched
    decomposers: list[DecomposerSpec] = Field(min_length=1)
    engines: list[Literal["executor", "vllm"]] = Field(default=["executor", "vllm"], min_length=1)
    answer: AnswerConfig = AnswerConfig()
    judge: JudgeConfig | None = JudgeConfig()  # null: no judged quality

    @model_validator(mode="after")
    def _consistent(self) -> E2EConfig:
        names = [d.name for d in self.decomposers]
        if len(set(names)) != len(names):
            raise ValueError(f"decomposer names must be unique: {names}")
        if self.judge is not None and self.judge.answers_from not in self.engines:
            raise ValueError(f"judge.answers_from {self.judge.answers_from!r} is not in engines {self.engines}")
        return self


def load_e2e_config(path: str | Path, overrides: dict[str, object] | None = None) -> E2EConfig:
    return load_yaml_config(path, E2EConfig, "end-to-end eval", overrides)
