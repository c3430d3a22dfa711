"""The decomposer's system prompt and output formats: one definition, used by data
preparation (SFT records), training, inference and evaluation alike.

Output formats, each one compact JSON object with the keys of `DECOMPOSITION_FIELDS`
in order:

- ``json-v2`` (verbatim): context and data items copied character for character.
- ``anchor-v1`` (compact): a long context or item is written as an anchor,
  ``first words…last words`` (see `data_prep.anchors`), resolved against the prompt after
  decoding. Short values stay verbatim.
- ``anchor-v2`` (the default): the anchor-v1 output behind a minimal system instruction
  (`MINIMAL_INSTRUCTION`, ~10 tokens instead of ~106). A fine-tuned adapter learns the
  contract from its data; the long contract only helps an untrained model.

`parse_completion` reads both: a value found verbatim in the prompt is kept, an anchor
is resolved. An adapter records the format it was trained on (`FORMAT_FILE`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_prep import anchors
from data_prep.schema import DECOMPOSITION_FIELDS, Record

# Kept short on purpose: it is prepended to every training example and every
# request (on a 2-core CPU, ~255 tokens of instructions were half of all SFT tokens).
# The JSON Schema enforces the shape at decode time; the prompt names the contract.
_CONTRACT = (
    "Decompose the user's prompt into independent subtasks. Reply with JSON only: "
    '{"parallelizable", "category", "template", "context", "data", "n"}. '
    "parallelizable is true only for two or more same-kind outputs that separate calls can each "
    "produce from the template, context and one item; otherwise false and the rest null. "
    "template is one subtask in the prompt's language with {data} and/or {context}; "
)


# The instruction an adapter is trained and served with: an adapter does not need the
# contract spelled out, and on a 2-core CPU every prompt token of every training example
# costs. Not empty: Qwen's chat template inserts its own default system prompt then.
MINIMAL_INSTRUCTION = "Decompose the prompt into independent subtasks as JSON."


@dataclass(frozen=True)
class OutputFormat:
    name: str
    system_prompt: str
    anchors: bool  # long context / items written as anchors into the prompt


FORMATS: dict[str, OutputFormat] = {
    "json-v2": OutputFormat(
        "json-v2",
        _CONTRACT + "context and data are copied verbatim from the prompt; n counts repeated generations.",
        anchors=False,
    ),
    "anchor-v1": OutputFormat(
        "anchor-v1",
        _CONTRACT
        + "context and data come from the prompt: short ones copied verbatim, long ones as "
        + f"'first words{anchors.SEP}last words'; n counts repeated generations.",
        anchors=True,
    ),
    "anchor-v2": OutputFormat("anchor-v2", MINIMAL_INSTRUCTION, anchors=True),
}
DEFAULT_FORMAT = "anchor-v2"
FORMAT_VERSION = DEFAULT_FORMAT  # the format new data sets and adapters use
SYSTEM_PROMPT = FORMATS[DEFAULT_FORMAT].system_prompt
FORMAT_FILE = "decomposer_format.json"  # next to an adapter: {"format_version": ..., "system_prompt": ...}


# Every output opens with the decision: `{"parallelizable":` then `true` or `false`. The
# decomposer reads the probability of `true` right after this prefix (one prefill, no
# decoding) and stops there when it says "serial".
DECISION_PREFIX = '{"parallelizable":'


@dataclass(frozen=True)
class DecisionTokens:
    prefix_ids: list[int]  # the tokens of DECISION_PREFIX, as the completion tokenises them
    true_id: int
    false_id: int


def decision_tokens(tokenizer) -> DecisionTokens:
    """The decision prefix and the `true` / `false` token ids of a tokenizer, checked
    against how a whole completion tokenises (a tokenizer that merges across the
    boundary cannot be gated this way: ValueError)."""
    prefix = tokenizer.encode(DECISION_PREFIX, add_special_tokens=False)
    ids = {}
    for word in ("true", "false"):
        whole = tokenizer.encode(f"{DECISION_PREFIX}{word},", add_special_tokens=False)
        if whole[: len(prefix)] != prefix or len(whole) < len(prefix) + 1:
            raise ValueError(f"the tokenizer merges {DECISION_PREFIX!r} with {word!r}: no single decision token")
        ids[word] = whole[len(prefix)]
        if tokenizer.decode([ids[word]]) != word:
            raise ValueError(f"{word!r} is not one token after {DECISION_PREFIX!r} for this tokenizer")
    return DecisionTokens(prefix, ids["true"], ids["false"])


def get_format(name: str) -> OutputFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown output format {name!r}; known: {', '.join(FORMATS)}") from None


def adapter_format(adapter_dir: str | Path | None) -> str:
    """The output format an adapter was trained on. Adapters from before the format file
    existed were trained on json-v2; the untrained base gets the default."""
    if adapter_dir is None:
        return DEFAULT_FORMAT
    path = Path(adapter_dir) / FORMAT_FILE
    if not path.is_file():
        return "json-v2"
    meta = json.loads(path.read_text(encoding="utf-8"))
    name = meta["format_version"]
    recorded = meta.get("system_prompt")  # absent in files written before it was recorded
    if recorded is not None and recorded != get_format(name).system_prompt:
        raise ValueError(
            f"{path}: the adapter was trained with a system prompt that differs from format {name!r} "
            f"in data_prep/formatting.py (trained: {recorded!r}); serve it with the code it was trained with"
        )
    get_format(name)
    return name


def write_format_file(output_dir: str | Path, fmt: str) -> None:
    """Record the output format and its exact system prompt next to an adapter."""
    meta = {"format_version": fmt, "system_prompt": get_format(fmt).system_prompt}
    Path(output_dir, FORMAT_FILE).write_text(json.dumps(meta, ensure_ascii=False) + "\n", encoding="utf-8")


def format_of_messages(messages: list[dict[str, str]]) -> str | None:
    """The output format whose system prompt opens these chat messages (None: a custom one)."""
    if messages and messages[0].get("role") == "system":
        for fmt in FORMATS.values():
            if messages[0].get("content") == fmt.system_prompt:
                return fmt.name
    return None


def decomposition_fields(rec: Record, fmt: str = DEFAULT_FORMAT) -> dict[str, Any]:
    fields = {field: getattr(rec, field) for field in DECOMPOSITION_FIELDS}
    if get_format(fmt).anchors:
        if fields["context"] is not None:
            fields["context"] = anchors.encode(fields["context"], rec.prompt)
        if fields["data"] is not None:
            fields["data"] = [anchors.encode(item, rec.prompt) for item in fields["data"]]
    return fields


def format_completion(rec: Record, fmt: str = DEFAULT_FORMAT) -> str:
    """The exact text the decomposer is trained to emit for a record."""
    return json.dumps(decomposition_fields(rec, fmt), ensure_ascii=False, separators=(",", ":"))


def parse_completion(text: str, prompt: str | None = None) -> dict[str, Any]:
    """Decomposition fields from the model's text, anchors resolved against `prompt`
    (when given). Raises ValueError with a reason."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"output is not valid JSON: {err}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"output is a JSON {type(obj).__name__}, not an object")
    unknown = set(obj) - set(DECOMPOSITION_FIELDS)
    if unknown:
        raise ValueError(f"output has unknown keys: {sorted(unknown)}")
    fields = {field: obj.get(field) for field in DECOMPOSITION_FIELDS}
    if prompt is not None:
        if isinstance(fields["context"], str):
            context = anchors.resolve(fields["context"], prompt)
            if context not in prompt:  # a mis-copied anchor: its most likely span, if any
                context = anchors.repair(context, prompt) or context
            fields["context"] = context
        if isinstance(fields["data"], list):
            fields["data"] = [anchors.resolve(x, prompt) if isinstance(x, str) else x for x in fields["data"]]
    return fields


def prompt_messages(user_prompt: str, fmt: str = DEFAULT_FORMAT) -> list[dict[str, str]]:
    """Chat messages given to the decomposer (the SFT `prompt` column)."""
    return [{"role": "system", "content": get_format(fmt).system_prompt}, {"role": "user", "content": user_prompt}]


def completion_messages(rec: Record, fmt: str = DEFAULT_FORMAT) -> list[dict[str, str]]:
    """The assistant turn it must produce (the SFT `completion` column)."""
    return [{"role": "assistant", "content": format_completion(rec, fmt)}]


def sft_example(rec: Record, fmt: str = DEFAULT_FORMAT) -> dict[str, Any]:
    """One conversational prompt/completion record for TRL's SFTTrainer, with metadata."""
    return {
        "id": rec.id,
        "source": rec.source,
        "language": rec.language,
        "category": rec.category,
        "parallelizable": rec.parallelizable,
        "record": rec.to_json(),
        "prompt": prompt_messages(rec.prompt, fmt),
        "completion": completion_messages(rec, fmt),
    }
