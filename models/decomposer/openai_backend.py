"""The decomposer's client of an OpenAI-compatible vLLM server (`python -m models.serving.server`):
structured outputs (`response_format` json_schema, the guidance backend) and the gate's
two decision logprobs (`continue_final_message` + `logprob_token_ids`)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from data_prep.formatting import DECISION_PREFIX
from models.decomposer.base import Decomposer, DecomposerError, Generation, PromptError
from models.decomposer.calibration import two_way_probability
from models.serving.server import adapter_name
from models.weights.registry import DEFAULT_DECOMPOSER


@dataclass(kw_only=True)
class OpenAIDecomposer(Decomposer):
    """A running OpenAI-compatible server (`python -m models.serving.server start`).

    `model` is the served name: the base model's, or an adapter's LoRA module name
    (`adapter`: the local adapter folder, whose name the server uses and whose output
    format is read from it), or a merged decomposer's folder (`python -m
    models.decomposer.merge`; served under the folder's name, format and threshold read
    from it).
    """

    model: str = DEFAULT_DECOMPOSER
    adapter: str | None = None
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key: str = "EMPTY"
    concurrency: int = 8
    timeout: float = 600.0
    max_retries: int = 2  # the openai client's retries (a timeout is one); the gateway sets 0
    gate: bool = True

    def __post_init__(self) -> None:
        import openai

        self.backend = "openai"
        trained = self._load_trained(self.adapter, self.model)  # a LoRA adapter, or one merged into its base
        if trained:  # the LoRA module's or the model folder's name: what models.serving.server serves it as
            self.model = adapter_name(trained)
        self.client = openai.OpenAI(
            base_url=self.base_url, api_key=self.api_key, timeout=self.timeout, max_retries=self.max_retries
        )
        try:
            served = [m.id for m in self.client.models.list().data]
        except openai.APIConnectionError:
            raise DecomposerError(
                f"no server answers at {self.base_url}: start one with `python -m models.serving.server start`"
            ) from None
        if self.model not in served:
            raise DecomposerError(f"the server at {self.base_url} does not serve {self.model!r} (it serves {served})")

    def request(self, prompt: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": self.messages(prompt),
            "temperature": 0.0,
            "max_tokens": self.max_new_tokens,
        }
        if self.constrained:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "decomposition", "schema": schema or self.schema},
            }
        return body

    def decision_token_ids(self) -> list[int]:
        """The ids of `true` and `false` after the decision prefix, from the server's own
        tokenizer (vLLM's /tokenize), asked once."""
        if not hasattr(self, "_decision_ids"):
            import httpx

            root = self.base_url.rstrip("/").removesuffix("/v1")

            def tokens(text: str) -> list[int]:
                body = {"model": self.model, "prompt": text, "add_special_tokens": False}
                try:
                    resp = httpx.post(f"{root}/tokenize", json=body, timeout=self.timeout)
                    resp.raise_for_status()
                except httpx.HTTPError as err:
                    raise DecomposerError(f"the server at {root} cannot tokenize for the gate: {err}") from None
                return resp.json()["tokens"]

            prefix = tokens(DECISION_PREFIX)
            ids = []
            for word in ("true", "false"):
                whole = tokens(f"{DECISION_PREFIX}{word},")
                if whole[: len(prefix)] != prefix or len(whole) <= len(prefix):
                    raise DecomposerError(f"the server's tokenizer merges {DECISION_PREFIX!r} with {word!r}")
                ids.append(whole[len(prefix)])
            self._decision_ids = ids
        return self._decision_ids

    def decision_request(self, prompt: str) -> dict[str, Any]:
        """One token after the assistant turn's forced opening, with the logprobs of
        exactly the two decision tokens (vLLM's `continue_final_message` and
        `logprob_token_ids`: the prompt ends inside the assistant turn)."""
        return {
            "model": self.model,
            "messages": [*self.messages(prompt), {"role": "assistant", "content": DECISION_PREFIX}],
            "temperature": 0.0,
            "max_tokens": 1,
            "logprobs": True,
            "extra_body": {
                "continue_final_message": True,
                "add_generation_prompt": False,
                "logprob_token_ids": self.decision_token_ids(),
            },
        }

    def _call(self, body: dict[str, Any]):
        import openai

        try:
            return self.client.chat.completions.create(**body)
        except openai.BadRequestError as err:  # e.g. longer than the server's max_model_len
            raise PromptError(f"the server rejected the prompt: {_message(err)}") from None
        except openai.APIConnectionError:
            raise DecomposerError(f"lost the connection to the server at {self.base_url}") from None
        except openai.APIStatusError as err:  # 5xx after the client's retries
            raise DecomposerError(f"the server answered {err.status_code}: {_message(err)}") from None

    def _decide(self, prompt: str) -> float:
        content = self._call(self.decision_request(prompt)).choices[0].logprobs
        if content is None or not content.content:
            raise DecomposerError("the server returned no logprobs for the decision token")
        top = {t.token.strip(): t.logprob for t in content.content[0].top_logprobs}
        if "true" not in top or "false" not in top:
            raise DecomposerError(f"the server returned no logprobs for true/false at the decision (got {sorted(top)})")
        return two_way_probability(top["true"], top["false"])

    def decision_probs(self, prompts: list[str]) -> list[float]:
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            return list(pool.map(self._decide, prompts))

    def _one(self, prompt: str, schema: dict[str, Any] | None = None) -> Generation:
        resp = self._call(self.request(prompt, schema))
        choice = resp.choices[0]
        tokens = resp.usage.completion_tokens if resp.usage else 0
        return Generation(choice.message.content or "", tokens, choice.finish_reason == "stop")

    def _generate(self, prompts: list[str], schema: dict[str, Any] | None = None) -> list[Generation]:
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            return list(pool.map(lambda p: self._one(p, schema), prompts))


def _message(err: Exception) -> str:
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        return str(body.get("message") or json.dumps(body))
    return str(err)
