"""The decomposer's system prompt and output format: one definition, used by
data preparation (SFT records), training, inference and evaluation alike."""

from __future__ import annotations

import json
from typing import Any

from data_prep.schema import CATEGORIES, DECOMPOSITION_FIELDS, Record

FORMAT_VERSION = "json-v1"

SYSTEM_PROMPT = (
    "You split a chatbot prompt into independent subtasks when it holds them.\n"
    "Reply with one JSON object and nothing else, with keys in this order: " + ", ".join(DECOMPOSITION_FIELDS) + ".\n"
    "- parallelizable: true only if the prompt asks for two or more outputs of the same kind that "
    "separate model calls can each produce from the template, the shared context and one item, "
    "with no output depending on another. When unsure, false; then every other key is null.\n"
    "- category: one of " + ", ".join(CATEGORIES) + ".\n"
    "- template: ONE subtask in the prompt's own language, keeping the user's instructions; "
    "{data} marks the item and {context} the shared text (each at most once); literal braces doubled.\n"
    "- context: text shared by every subtask, copied verbatim from the prompt, or null.\n"
    "- data: the items (at least 2), copied from the prompt without list markers; or null.\n"
    "- n: how many times to run the template for repeated generation (at least 2); or null.\n"
    "Exactly one of data and n is set when parallelizable is true."
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
