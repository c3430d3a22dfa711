"""The gateway's settings (`configs/gateway/*.yaml`), parsed strictly.

Two servers stand behind the gateway, both OpenAI-compatible: the answer model (`answer`)
and the decomposer (`decomposer`, any backend of `models.decomposer`; `openai` talks to a
`vllm serve` that serves the adapter). On this CPU one `vllm serve` serves both (the base
model answers, its LoRA adapter decomposes); on a GPU deployment they are two servers
with any model names. `launch` says what `python -m models.gateway start` starts first;
without it the servers are expected to run already.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from data_prep.config import StrictModel, load_yaml_config
from models.weights.registry import DEFAULT_DECOMPOSER

DEFAULT_ADAPTER = "artifacts/adapters/qwen2.5-coder-0.5b-lora-cpu-anchor-v4"


class AnswerServer(StrictModel):
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = DEFAULT_DECOMPOSER  # the answer model's served name (what a request's `model` defaults to)
    api_key: str = "EMPTY"
    timeout_s: float = Field(default=600.0, gt=0)


class DecomposerSettings(StrictModel):
    backend: Literal["openai", "vllm", "hf", "rules"] = "openai"
    adapter: str | None = DEFAULT_ADAPTER
    model: str = DEFAULT_DECOMPOSER
    base_url: str | None = None  # openai backend; default: the answer server's
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)  # None: the adapter's calibrated one
    timeout_s: float = Field(default=30.0, gt=0)  # the budget: a slower decomposition runs the request serially
    retry_after_s: float = Field(default=10.0, ge=0)  # a decomposer that failed to load is retried this often


class LaunchServer(StrictModel):
    """A `vllm serve` that `start` runs (models.serving.server) before the gateway."""

    model: str = DEFAULT_DECOMPOSER
    adapters: list[str] = Field(default_factory=lambda: [DEFAULT_ADAPTER])
    port: int = Field(default=8000, ge=1, le=65535)
    max_model_len: int = Field(default=4096, ge=256)
    kv_cache_gib: float = Field(default=2.0, gt=0)
    timeout_s: float = Field(default=600.0, gt=0)


class GatewayConfig(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    answer: AnswerServer = Field(default_factory=AnswerServer)
    decomposer: DecomposerSettings = Field(default_factory=DecomposerSettings)
    launch: list[LaunchServer] = Field(default_factory=list)
    max_in_flight: int = Field(default=8, ge=1)  # requests worked on at once
    max_queue: int = Field(default=32, ge=0)  # requests waiting beyond those; more get 429
    max_prompt_chars: int = Field(default=32_000, ge=1)  # a longer last user turn gets 400
    max_branches: int = Field(default=16, ge=2)  # a decomposition with more sub-prompts runs serially
    branch_max_tokens: int = Field(default=256, ge=1)  # per branch; a request's max_tokens lowers it
    repeat_temperature: float = Field(default=0.7, gt=0)  # n identical sub-prompts need sampling to differ
    # one seed per sampled branch (the request's seed + i: reproducible n outputs). false on a
    # vLLM-CPU answer server: there a seeded request whose sampled token is discarded (a chunked
    # prefill step) kills the engine ("CPU Generator does not use offset", measured under load
    # in artifacts/bench/gateway-merged-v4-seeded); unseeded branches still differ, by sampling
    branch_seeds: bool = True
    # where branches run: "upstream" (the answer server, the conversation kept) or "executor" (the
    # masked-attention executor in process: the last user turn only, the default system prompt);
    # serial requests always go to the answer server
    engine: Literal["upstream", "executor"] = "upstream"

    @model_validator(mode="after")
    def _local_by_default(self) -> GatewayConfig:
        if self.decomposer.backend == "openai" and self.decomposer.base_url is None:
            self.decomposer.base_url = self.answer.base_url
        return self


def load_gateway_config(path: str | Path | None, overrides: dict[str, object] | None = None) -> GatewayConfig:
    if path is None:
        return GatewayConfig.model_validate(overrides or {})
    return load_yaml_config(path, GatewayConfig, "gateway", overrides)
