"""The decomposer's system prompt and output format: one definition, used by
data preparation (SFT records), training, inference and evaluation alike."""

from __future__ import annotations

import json
from typing import Any

from data_prep.schema import DECOMPOSITION_FIELDS, Record

FORMAT_VERSION = "json-v2"

# Kept short on purpose: it is prepended to every training example and every
# request (on a 2-core CPU, ~255 tokens of instructions were half of all SFT tokens).
# The JSON Schema enforces the shape at decode time; the prompt names the contract.
SYSTEM_PROMPT = (
    "Decompose the user's prompt into independent subtasks. Reply with JSON only: "
    '{"parallelizable", "category", "template", "context", "data", "n"}. '
    "parallelizable is true only for two or more same-kind outputs that separate calls can each "
    "produce from the template, context and one item; otherwise false and the rest null. "
    "template is one subtask in the prompt's language with {data} and/or {context}; "
    "context and data are copied verbatim from the prompt; n counts repeated generations."
)


def decomposition_fields(rec: Record) -> dict[str, Any]:
    return {field: getattr(rec, field) for field in DECOMPOSITION_FIELDS}


def format_completion(rec: Record) -> str:
    """The exact text the decomposer is trained to emit for a record."""
    return json.dumps(decomposition_fields(rec), ensure_ascii=False, separators=(",", ":"))


def parse_completion(text: str) -> dict[str, Any]:
    """Decomposition fields from the model's text. Raises ValueError with a reason."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"output is not valid JSON: {err}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"output is a JSON {type(obj).__name__}, not an object")
    unknown = set(obj) - set(DECOMPOSITION_FIELDS)
    if unknown:
        raise ValueError(f"output has unknown keys: {sorted(unknown)}")
    return {field: obj.get(field) for field in DECOMPOSITION_FIELDS}


def prompt_messages(user_prompt: str) -> list[dict[str, str]]:
    """Chat messages given to the decomposer (the SFT `prompt` column)."""
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user_prompt}]


def completion_messages(rec: Record) -> list[dict[str, str]]:
    """The assistant turn it must produce (the SFT `completion` column)."""
    return [{"role": "assistant", "content": format_completion(rec)}]


def sft_example(rec: Record) -> dict[str, Any]:
    """One conversational prompt/completion record for TRL's SFTTrainer, with metadata."""
    return {
        "id": rec.id,
        "source": rec.source,
        "language": rec.language,
        "category": rec.category,
        "parallelizable": rec.parallelizable,
        "record": rec.to_json(),
        "prompt": prompt_messages(rec.prompt),
        "completion": completion_messages(rec),
    }
