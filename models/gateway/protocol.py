"""The OpenAI chat-completions wire format as the gateway reads and writes it: request
checks that give OpenAI-style 4xx bodies, which requests it may split, and the response,
stream chunks and headers of a reassembled answer."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse

ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
# requests the gateway cannot split without changing their meaning: passed through as they are
PASS_THROUGH_KEYS = ("tools", "functions", "tool_choice", "function_call", "response_format", "logprobs", "audio")


class RequestError(Exception):
    """A bad request: answered with an OpenAI-style error body, never a traceback."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(status: int, message: str, *, param=None, code=None, headers=None) -> JSONResponse:
    kind = {400: "invalid_request_error", 404: "invalid_request_error", 413: "invalid_request_error"}.get(
        status, "rate_limit_error" if status == 429 else "server_error" if status >= 500 else "invalid_request_error"
    )
    return JSONResponse(error_body(message, kind, param, code), status_code=status, headers=headers)


def parse_request(raw: bytes, max_prompt_chars: int) -> dict[str, Any]:
    """The request body as a dict, checked enough that nothing below fails on its shape."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RequestError(400, f"the request body is not valid JSON: {err}") from None
    if not isinstance(body, dict):
        raise RequestError(400, f"the request body must be a JSON object, not {type(body).__name__}")
    if "model" in body and not isinstance(body["model"], str):
        raise RequestError(400, "`model` must be a string", param="model")
    messages = body.get("messages")
    if messages is None:
        raise RequestError(400, "`messages` is required", param="messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "`messages` must be a non-empty list", param="messages")
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise RequestError(400, f"{where} must be an object", param=where)
        if msg.get("role") not in ROLES:
            raise RequestError(400, f"{where}.role must be one of {sorted(ROLES)}", param=f"{where}.role")
        content = msg.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise RequestError(400, f"{where}.content must be a string or a list of parts", param=f"{where}.content")
        if isinstance(content, str) and len(content) > max_prompt_chars:
            raise RequestError(
                400,
                f"{where}.content has {len(content)} characters; this gateway accepts at most {max_prompt_chars}",
                param=f"{where}.content",
                code="context_length_exceeded",
            )
    last = messages[-1]
    if last.get("role") == "user" and isinstance(last.get("content"), str) and not last["content"].strip():
        raise RequestError(400, "the last user message is empty", param=f"messages[{len(messages) - 1}].content")
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        raise RequestError(400, "`stream` must be a boolean", param="stream")
    for key in ("n", "max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise RequestError(400, f"`{key}` must be an integer", param=key)
    for key in ("max_tokens", "max_completion_tokens", "n"):
        if body.get(key) is not None and body[key] < 1:
            raise RequestError(400, f"`{key}` must be at least 1", param=key)
    temperature = body.get("temperature")
    if temperature is not None and (not isinstance(temperature, (int, float)) or isinstance(temperature, bool)):
        raise RequestError(400, "`temperature` must be a number", param="temperature")
    return body


def why_not_split(body: dict[str, Any]) -> str | None:
    """None when the gateway may split the request, else why it passes it through."""
    for key in PASS_THROUGH_KEYS:
        if body.get(key):
            return f"pass_through: {key}"
    if (body.get("n") or 1) > 1:
        return "pass_through: n>1"
    last = body["messages"][-1]
    if last.get("role") != "user":
        return "pass_through: the last message is not the user's"
    if not isinstance(last.get("content"), str):
        return "pass_through: the last message is not plain text"
    return None


@dataclass
class Outcome:
    """What the gateway did with one request: the extension field and the headers."""

    split: bool = False
    branches: int | None = None
    category: str | None = None
    p_parallel: float | None = None
    decomposer_ms: float | None = None
    fallback_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        ms = None if self.decomposer_ms is None else round(self.decomposer_ms, 1)
        p = None if self.p_parallel is None else round(self.p_parallel, 4)
        return {
            "split": self.split,
            "branches": self.branches,
            "category": self.category,
            "p_parallel": p,
            "decomposer_ms": ms,
            "fallback_reason": self.fallback_reason,
        }

    def headers(self) -> dict[str, str]:
        h = {"x-parallel-split": "1" if self.split else "0"}
        if self.branches is not None:
            h["x-parallel-branches"] = str(self.branches)
        if self.decomposer_ms is not None:
            h["x-parallel-decomposer-ms"] = f"{self.decomposer_ms:.1f}"
        if self.fallback_reason:
            h["x-parallel-fallback"] = self.fallback_reason.encode("ascii", "replace").decode()[:200]
        return h


def completion_id() -> str:
    return f"chatcmpl-par-{uuid.uuid4().hex[:24]}"


def completion(model: str, text: str, finish: str, usage: dict[str, int], outcome: Outcome) -> dict[str, Any]:
    return {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": usage,
        "parallel": outcome.to_json(),
    }


def chunk(cid: str, model: str, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
    """One server-sent event of a chat.completion.chunk stream."""
    body = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


DONE = "data: [DONE]\n\n"
