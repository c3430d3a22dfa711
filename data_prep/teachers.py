"""Teacher clients for labelling: Claude through the Anthropic API (forced tool use) and
any OpenAI-compatible server (JSON-schema response format), e.g. a larger local model
under `vllm serve` (`python -m models.serving.server start --model ...`).

Both return the teacher's JSON text and token usage, and sort failures into transient
ones (429, 5xx, 529 overloaded, timeouts, lost connections: retry with backoff, honouring
Retry-After) and permanent ones (bad request, authentication: stop). The SDKs' own
retries are off so that the labeller owns the retry policy and counts every attempt.
Tests pass a fake `httpx` transport: the true boundary, with the APIs' real shapes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx  # the SDKs (anthropic, openai) use httpx2

from data_prep.schema import output_json_schema
from data_prep.teacher_prompt import TEACHER_INSTRUCTIONS, TOOL_DESCRIPTION, TOOL_NAME, tool_input_schema

# USD per million input / output tokens, list prices when written (2026); override with
# --price-in/--price-out. Models not listed (and local servers) are costed at 0 unless given.
PRICES: dict[str, tuple[float, float]] = {
    "claude-opus-4-1": (15.0, 75.0),
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-haiku-4-5": (1.0, 5.0),
}


class TransientError(RuntimeError):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(RuntimeError):
    pass


@dataclass
class TeacherReply:
    text: str  # the JSON object the teacher produced, as text
    input_tokens: int
    output_tokens: int


def _retry_after(headers: Any) -> float | None:
    try:
        value = headers.get("retry-after") if headers is not None else None
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _classify(err: Exception, sdk: Any) -> Exception:
    """SDK exception -> TransientError / PermanentError with a readable message."""
    if isinstance(err, sdk.APITimeoutError):
        return TransientError(f"timeout: {err}")
    if isinstance(err, sdk.APIConnectionError):
        return TransientError(f"connection error: {err}")
    if isinstance(err, sdk.APIStatusError):
        status = err.status_code
        message = f"HTTP {status}: {err.message}"
        if status == 429 or status >= 500:
            return TransientError(message, _retry_after(err.response.headers))
        return PermanentError(message)
    return err


class AnthropicTeacher:
    name = "anthropic"

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        max_tokens: int = 2048,
        timeout: float = 120.0,
        http_client: httpx.Client | None = None,
    ):
        import anthropic

        self._sdk = anthropic
        self.model = model
        self.max_tokens = max_tokens
        self.client = anthropic.Anthropic(api_key=api_key, max_retries=0, timeout=timeout, http_client=http_client)

    def complete(self, messages: list[dict[str, str]]) -> TeacherReply:
        try:
            resp = self.client.messages.create(
                model=self.model,
                max_tokens=self.max_tokens,  # (this SDK's Messages API takes no sampling temperature)
                system=TEACHER_INSTRUCTIONS,
                messages=messages,
                tools=[{"name": TOOL_NAME, "description": TOOL_DESCRIPTION, "input_schema": tool_input_schema()}],
                tool_choice={"type": "tool", "name": TOOL_NAME},
            )
        except self._sdk.APIError as err:
            raise _classify(err, self._sdk) from None
        usage = resp.usage
        blocks = [b for b in resp.content if getattr(b, "type", None) == "tool_use" and b.name == TOOL_NAME]
        if blocks:
            text = json.dumps(blocks[0].input, ensure_ascii=False)
        else:  # no tool call: pass the text on; validation explains what is missing
            text = "".join(getattr(b, "text", "") for b in resp.content)
        return TeacherReply(text, usage.input_tokens, usage.output_tokens)


class OpenAITeacher:
    name = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str = "http://127.0.0.1:8000/v1",
        api_key: str = "EMPTY",
        max_tokens: int = 2048,
        timeout: float = 600.0,
        http_client: httpx.Client | None = None,
    ):
        import openai

        self._sdk = openai
        self.model = model
        self.max_tokens = max_tokens
        self.client = openai.OpenAI(
            base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout, http_client=http_client
        )

    def complete(self, messages: list[dict[str, str]]) -> TeacherReply:
        try:
            resp = self.client.chat.completions.create(
                model=self.model,
                messages=[{"role": "system", "content": TEACHER_INSTRUCTIONS}, *messages],
                temperature=0.0,
                max_tokens=self.max_tokens,
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "decomposition", "schema": output_json_schema()},
                },
            )
        except self._sdk.APIError as err:
            raise _classify(err, self._sdk) from None
        usage = resp.usage
        text = resp.choices[0].message.content or ""
        return TeacherReply(text, usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0)


def make_teacher(kind: str, model: str, **options: Any):
    if kind == "anthropic":
        return AnthropicTeacher(model, **options)
    if kind == "openai":
        return OpenAITeacher(model, **options)
    raise ValueError(f"unknown teacher {kind!r}; choose anthropic or openai")


def cost_usd(model: str, input_tokens: int, output_tokens: int, prices: tuple[float, float] | None = None) -> float:
    price_in, price_out = prices or PRICES.get(model, (0.0, 0.0))
    return (input_tokens * price_in + output_tokens * price_out) / 1e6
