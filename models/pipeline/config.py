"""The answer model's settings, the same for serial and parallel runs (the `answer:` block
of an evaluation config)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from data_prep.config import StrictModel
from models.weights.registry import DEFAULT_DECOMPOSER


class AnswerConfig(StrictModel):
    """The answer model, the same for serial and parallel runs."""

    model: str = DEFAULT_DECOMPOSER
    system_prompt: str = "You are a helpful assistant."
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    serial_max_new_tokens: int = Field(default=512, ge=1)
    branch_max_new_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.7, gt=0.0)  # repeated generation (n identical sub-prompts) only
    top_p: float = Field(default=0.9, gt=0.0, le=1.0)
    seed: int = 0
    max_model_len: int = Field(default=4096, ge=256)
    kv_cache_gib: float = Field(default=2.0, gt=0.0)
    # a decomposition with more sub-prompts runs serially (counted as such): a decomposer that
    # says n=800 for "write a few slogans" must not cost 800 branches
    max_branches: int = Field(default=64, ge=2)
