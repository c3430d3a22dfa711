"""What the teacher model reads when it labels a prompt, and the rule-based confidence
post-check of its labels.

The instructions restate docs/SCHEMA.md in this project's words. Few-shot examples are
real records of our labelled data (one per category plus negatives, short prompts,
chosen deterministically). The teacher answers in the verbatim format (json-v2): a
label is a full schema record, never anchors.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from data_prep.formatting import format_completion
from data_prep.schema import CATEGORIES, Record

TEACHER_INSTRUCTIONS = f"""You label chatbot prompts for intra-query parallelism. For the user's prompt, decide whether it asks for several independent outputs of the same kind, and if so describe how to produce each one with a separate model call.

Answer with one JSON object with exactly these keys, in this order:
- "parallelizable": true only if the prompt asks for two or more outputs of the same kind, each producible by a separate call that sees only the template, the shared context and one item, with no output depending on another. When unsure, answer false: a wrong true costs more than a wrong false.
- "category": one of {", ".join(CATEGORIES)}; null when not parallelizable.
- "template": the instruction for ONE output, in the prompt's own language, keeping the user's requirements (format, length, tone) that apply to each output. It contains {{data}} exactly once when data is set and {{context}} exactly once when context is set, and no other placeholder (no count such as {{n}}). Double literal braces from the prompt: {{{{ and }}}}.
- "context": text every call needs, copied character for character from the prompt as one contiguous piece; null if nothing is shared.
- "data": the list of items (at least 2), each copied from the prompt without list markers such as "1." or "-"; a minimal paraphrase only where the prompt implies the items ("people, places and companies" gives "people", "places", "companies").
- "n": for a request to generate the same kind of thing several times, the count (at least 2), with data null.
Exactly one of data and n is set when parallelizable is true. When it is false, every other key is null.

Answer false for: one output with several attributes; steps that build on each other; one analysis or report covering several aspects; tables or calculations whose parts depend on each other; a single question, translation or piece of writing; conversation, greetings; one program.
Filling the template with each item (or running it n times) and reading the answers in order must answer the original prompt."""

TOOL_NAME = "record_decomposition"
TOOL_DESCRIPTION = "Record the decomposition of the user's prompt (the JSON object described in the instructions)."


def tool_input_schema() -> dict[str, Any]:
    """Anthropic tool input schemas must be a top-level object: the union of the variants
    of `output_json_schema`, as nullable fields; the schema module checks the rules."""
    nullable_string = {"type": ["string", "null"]}
    return {
        "type": "object",
        "properties": {
            "parallelizable": {"type": "boolean"},
            "category": {"type": ["string", "null"], "enum": [*CATEGORIES, None]},
            "template": nullable_string,
            "context": nullable_string,
            "data": {"type": ["array", "null"], "items": {"type": "string"}},
            "n": {"type": ["integer", "null"]},
        },
        "required": ["parallelizable", "category", "template", "context", "data", "n"],
        "additionalProperties": False,
    }


def select_few_shot(
    records: list[Record], per_category: int = 1, negatives: int = 2, max_chars: int = 600
) -> list[Record]:
    """Short labelled examples: `per_category` positives of each category and `negatives`
    negatives, the first ones in file order (deterministic)."""
    short = [r for r in records if len(r.prompt) <= max_chars]
    chosen: list[Record] = []
    for category in CATEGORIES:
        chosen += [r for r in short if r.parallelizable and r.category == category][:per_category]
    chosen += [r for r in short if not r.parallelizable][:negatives]
    return chosen


def teacher_messages(prompt: str, shots: list[Record], feedback: tuple[str, str] | None = None) -> list[dict[str, str]]:
    """User/assistant turns: the few-shot examples, then the prompt to label. With
    `feedback` (previous answer, what was wrong) the teacher is asked to correct itself."""
    messages: list[dict[str, str]] = []
    for shot in shots:
        messages += [
            {"role": "user", "content": shot.prompt},
            {"role": "assistant", "content": format_completion(shot, "json-v2")},
        ]
    messages.append({"role": "user", "content": prompt})
    if feedback is not None:
        previous, problem = feedback
        messages += [
            {"role": "assistant", "content": previous},
            {"role": "user", "content": f"That answer breaks the rules: {problem}\nAnswer again for the same prompt."},
        ]
    return messages


# ---------------- confidence tiers (a rule-based post-check of positive labels) ----------------

Tier = Literal["high", "medium", "reject"]
_LIST_LINE = re.compile(r"^\s*(?:\d{1,3}[.)]|[-*•]|[a-z][.)])\s+\S", re.M | re.I)
_COUNT = re.compile(r"\b(\d{1,3})\b")
_SOFT_CUES = re.compile(
    r"\b(each|every|these|those|following|below|all|several|multiple|list|various|some|few)\b"
    r"|\b(cada|estos|estas|siguientes|chaque|ces|suivant|jede[nrs]?|diese|folgende|каждый|эти|следующие)\b"
    r"|(每个|这些|以下|各|それぞれ|以下の|これらの|각각|다음|이)",
    re.I,
)
_NUMBER_WORDS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}


def confidence(prompt: str, fields: dict[str, Any]) -> tuple[Tier, str]:
    """(tier, why) of a positive label: explicit markers in the prompt (a list of 2+ lines,
    a count equal to n or to the number of items) are high; softer cues (each/these/...,
    several questions, a comma-separated enumeration of the items) medium; none: reject.
    Negative labels are high (precision is what a positive must earn)."""
    if not fields.get("parallelizable"):
        return "high", "negative label"
    expected = fields.get("n") or len(fields.get("data") or [])
    list_lines = len(_LIST_LINE.findall(prompt))
    counts = {int(m) for m in _COUNT.findall(prompt)} | {
        v for w, v in _NUMBER_WORDS.items() if re.search(rf"\b{w}\b", prompt, re.I)
    }
    if list_lines >= 2 and (fields.get("data") is None or list_lines >= len(fields["data"])):
        return "high", f"a list of {list_lines} marked lines"
    if expected and expected in counts:
        return "high", f"the prompt states the count {expected}"
    if prompt.count("?") >= 2 or prompt.count("？") >= 2:
        return "medium", "several questions"
    if _SOFT_CUES.search(prompt):
        return "medium", f"soft cue {_SOFT_CUES.search(prompt).group(0)!r}"
    items = fields.get("data") or []
    if len(items) >= 2 and all(i.casefold() in prompt.casefold() for i in items):
        return "medium", "the items are enumerated in the prompt"
    return "reject", "no list, count or enumeration cue for a parallel label"


def shots_as_json(shots: list[Record]) -> str:
    return json.dumps([s.id for s in shots])
