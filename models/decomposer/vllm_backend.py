"""The decomposer's in-process vLLM backend (`vllm.LLM`, the adapter as a `LoRARequest`).

It constrains decoding with vLLM's structured outputs on the guidance backend (the same
llguidance engine as the transformers backend).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.decomposer.base import DecomposerError, Generation, LocalDecomposer
from models.decomposer.calibration import two_way_probability
from models.serving.vllm_env import VLLMUnavailable, engine_kwargs, load_llm

LORA_NAME = "decomposer"


@dataclass(kw_only=True)
class VLLMDecomposer(LocalDecomposer):
    """In-process vLLM: one engine, the adapter as a `LoRARequest`, guided JSON."""

    kv_cache_gib: float = 2.0
    prefix_caching: bool = True  # the gate's prefill is reused by the decoding that follows it

    def __post_init__(self) -> None:
        self._setup("vllm")
        adapters = [self.adapter] if self.adapter else None
        try:
            self.llm = load_llm(
                self.model,
                kv_cache_gib=self.kv_cache_gib,
                enable_prefix_caching=self.prefix_caching,
                **engine_kwargs(adapters, self.dtype, self.max_model_len),
            )
        except VLLMUnavailable as err:
            raise DecomposerError(str(err)) from None
        from vllm.lora.request import LoRARequest

        self.tokenizer = self.llm.get_tokenizer()
        self.lora = LoRARequest(LORA_NAME, 1, str(Path(self.adapter).resolve())) if self.adapter else None

    def sampling_params(self, schema: dict[str, Any] | None = None):
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        structured = StructuredOutputsParams(json=schema or self.schema) if self.constrained else None
        return SamplingParams(temperature=0.0, max_tokens=self.max_new_tokens, structured_outputs=structured)

    def decision_probs(self, prompts: list[str]) -> list[float]:
        """One prefill per prompt (prefix caching shares it with the decoding that may
        follow) and one token, with the raw logprobs of exactly the two decision tokens."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        d = self.decision
        params = SamplingParams(temperature=0.0, max_tokens=1, logprob_token_ids=[d.true_id, d.false_id])
        outs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=self.decision_ids(p)) for p in prompts],
            params,
            lora_request=self.lora,
            use_tqdm=False,
        )
        probs = []
        for out in outs:
            top = out.outputs[0].logprobs[0]  # token id -> Logprob, raw (before any processing)
            probs.append(two_way_probability(top[d.true_id].logprob, top[d.false_id].logprob))
        return probs

    def _generate(self, prompts: list[str], schema: dict[str, Any] | None = None) -> list[Generation]:
        outs = self.llm.chat(
            [self.messages(p) for p in prompts], self.sampling_params(schema), lora_request=self.lora, use_tqdm=False
        )
        gens = []
        for out in outs:
            o = out.outputs[0]
            gens.append(Generation(o.text, len(o.token_ids), o.finish_reason == "stop", list(o.token_ids)))
        return gens
