"""The decomposer's vLLM backends: in-process `vllm.LLM` and an OpenAI-compatible server.

Both constrain decoding with vLLM's structured outputs on the guidance backend (the same
llguidance engine as the transformers backend) and serve the LoRA adapter natively.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_prep.formatting import adapter_format
from models.decomposer import Decomposer, DecomposerError, Generation, LocalDecomposer, PromptError, check_adapter
from models.serve import adapter_name
from models.vllm_env import VLLMUnavailable, engine_kwargs, load_llm

LORA_NAME = "decomposer"


@dataclass(kw_only=True)
class VLLMDecomposer(LocalDecomposer):
    """In-process vLLM: one engine, the adapter as a `LoRARequest`, guided JSON."""

    kv_cache_gib: float = 2.0

    def __post_init__(self) -> None:
        self._setup("vllm")
        adapters = [self.adapter] if self.adapter else None
        try:
            self.llm = load_llm(
                self.model, kv_cache_gib=self.kv_cache_gib, **engine_kwargs(adapters, self.dtype, self.max_model_len)
            )
        except VLLMUnavailable as err:
            raise DecomposerError(str(err)) from None
        from vllm.lora.request import LoRARequest

        self.tokenizer = self.llm.get_tokenizer()
        self.lora = LoRARequest(LORA_NAME, 1, str(Path(self.adapter).resolve())) if self.adapter else None

    def sampling_params(self):
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        structured = StructuredOutputsParams(json=self.schema) if self.constrained else None
        return SamplingParams(temperature=0.0, max_tokens=self.max_new_tokens, structured_outputs=structured)

    def _generate(self, prompts: list[str]) -> list[Generation]:
        outs = self.llm.chat(
            [self.messages(p) for p in prompts], self.sampling_params(), lora_request=self.lora, use_tqdm=False
        )
        gens = []
        for out in outs:
            o = out.outputs[0]
            gens.append(Generation(o.text, len(o.token_ids), o.finish_reason == "stop", list(o.token_ids)))
        return gens


@dataclass(kw_only=True)
class OpenAIDecomposer(Decomposer):
    """A running OpenAI-compatible server (`python -m models.serve start`).

    `model` is the served name: the base model's, or an adapter's LoRA module name
    (`adapter`: the local adapter folder, whose name the server uses and whose output
    format is read from it).
    """

    model: str = "qwen2.5-coder-0.5b-instruct"
    adapter: str | None = None
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key: str = "EMPTY"
    concurrency: int = 8
    timeout: float = 600.0

    def __post_init__(self) -> None:
        import openai

        self.backend = "openai"
        if self.adapter:
            check_adapter(self.adapter)
            self.fmt = adapter_format(self.adapter)
            self.model = adapter_name(self.adapter)  # the LoRA module name models.serve gives it
        self.client = openai.OpenAI(base_url=self.base_url, api_key=self.api_key, timeout=self.timeout, max_retries=2)
        try:
            served = [m.id for m in self.client.models.list().data]
        except openai.APIConnectionError:
            raise DecomposerError(
                f"no server answers at {self.base_url}: start one with `python -m models.serve start`"
            ) from None
        if self.model not in served:
            raise DecomposerError(f"the server at {self.base_url} does not serve {self.model!r} (it serves {served})")

    def request(self, prompt: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": self.messages(prompt),
            "temperature": 0.0,
            "max_tokens": self.max_new_tokens,
        }
        if self.constrained:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "decomposition", "schema": self.schema},
            }
        return body

    def _one(self, prompt: str) -> Generation:
        import openai

        try:
            resp = self.client.chat.completions.create(**self.request(prompt))
        except openai.BadRequestError as err:  # e.g. longer than the server's max_model_len
            raise PromptError(f"the server rejected the prompt: {_message(err)}") from None
        except openai.APIConnectionError:
            raise DecomposerError(f"lost the connection to the server at {self.base_url}") from None
        except openai.APIStatusError as err:  # 5xx after the client's retries
            raise DecomposerError(f"the server answered {err.status_code}: {_message(err)}") from None
        choice = resp.choices[0]
        tokens = resp.usage.completion_tokens if resp.usage else 0
        return Generation(choice.message.content or "", tokens, choice.finish_reason == "stop")

    def _generate(self, prompts: list[str]) -> list[Generation]:
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            return list(pool.map(self._one, prompts))


def _message(err: Exception) -> str:
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        return str(body.get("message") or json.dumps(body))
    return str(err)
