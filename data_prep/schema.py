"""The decomposition contract (docs/SCHEMA.md), defined once for every stage.

- `Record`: one labelled prompt in the schema's JSONL format (pydantic, strict keys).
- `check_record`: every rule of SCHEMA.md as a check with a readable reason.
- `output_json_schema`: the JSON Schema of what the decomposer emits, for
  grammar-constrained decoding.
- `render_subprompts`: a decomposition turned into the prompts the executor runs.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, ValidationError

Category = Literal[
    "repeated_generation",
    "reading_comprehension",
    "keyword_extraction",
    "named_entity_recognition",
    "translation",
    "language_correction",
    "sentiment_analysis",
    "other",
]
CATEGORIES: tuple[str, ...] = get_args(Category)
# The fields the decomposer predicts, in the order it emits them.
DECOMPOSITION_FIELDS: tuple[str, ...] = ("parallelizable", "category", "template", "context", "data", "n")
RECORD_FIELDS: tuple[str, ...] = ("id", "source", "language", "prompt", *DECOMPOSITION_FIELDS)
PLACEHOLDERS = frozenset({"context", "data"})
_ISO_639_1 = re.compile(r"^[a-z]{2}$")


class Record(BaseModel):
    """One labelled prompt. Types only; the rules live in `check_record`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: str
    source: str
    language: str
    prompt: str
    parallelizable: bool
    category: Category | None = None
    template: str | None = None
    context: str | None = None
    data: list[str] | None = None
    n: int | None = None

    def to_json(self) -> str:
        return json.dumps(self.model_dump(), ensure_ascii=False)


@dataclass(frozen=True)
class Violation:
    """A broken rule. `severity` is "error" (the record breaks SCHEMA.md) or
    "warning" (allowed by the rules but worth a look, e.g. a paraphrased item)."""

    rule: str
    reason: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        return f"[{self.rule}] {self.reason}"


def template_fields(template: str) -> list[str]:
    """Names of the `{...}` fields in a str.format template, in order.

    Raises ValueError for unbalanced single braces (literal braces must be doubled).
    """
    return [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]


def _short(text: str, limit: int = 60) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_template(rec: Record) -> list[Violation]:
    out: list[Violation] = []
    template = rec.template or ""
    if not template.strip():
        return [Violation("rule5.template", "template is empty")]
    try:
        fields = template_fields(template)
    except ValueError as err:
        return [
            Violation("rule5.braces", f"template is not a valid format string ({err}); literal braces must be doubled")
        ]
    for field in fields:
        if field not in PLACEHOLDERS:
            shown = "{" + field + "}"
            if field in ("n", "count"):
                out.append(
                    Violation(
                        "rule5.count_placeholder",
                        f"template has a count placeholder {shown}; it must ask for ONE output",
                    )
                )
            else:
                out.append(
                    Violation(
                        "rule5.unknown_placeholder",
                        f"template has placeholder {shown}; only {{context}} and {{data}} are allowed",
                    )
                )
    for name, value in (("data", rec.data), ("context", rec.context)):
        count, rule = fields.count(name), f"rule5.{name}_placeholder"
        if value is not None and count != 1:
            out.append(
                Violation(rule, f"template must contain {{{name}}} exactly once when {name} is set (found {count})")
            )
        if value is None and count:
            out.append(Violation(rule, f"template contains {{{name}}} but {name} is null"))
    return out


def check_record(record: Record | dict[str, Any]) -> list[Violation]:
    """All violations of SCHEMA.md for one record (empty list = valid)."""
    if not isinstance(record, Record):
        try:
            record = Record.model_validate(record)
        except ValidationError as err:
            return [Violation("types", _pydantic_reason(err))]
    rec = record
    out: list[Violation] = []
    if not rec.id.strip():
        out.append(Violation("id", "id is empty"))
    if not _ISO_639_1.match(rec.language):
        out.append(Violation("language", f"language {rec.language!r} is not an ISO 639-1 code (two lowercase letters)"))
    if not rec.prompt.strip():
        out.append(Violation("prompt", "prompt is empty"))

    if not rec.parallelizable:  # rule 2
        set_fields = [f for f in DECOMPOSITION_FIELDS[1:] if getattr(rec, f) is not None]
        if set_fields:
            out.append(
                Violation("rule2.negative_nulls", f"parallelizable is false but {', '.join(set_fields)} not null")
            )
        return out

    if rec.category is None:  # rule 4 (the enum itself is checked by the type)
        out.append(Violation("rule4.category", "parallelizable is true but category is null"))
    if (rec.data is None) == (rec.n is None):  # rule 3
        out.append(Violation("rule3.data_or_n", "exactly one of data and n must be set"))
    if rec.data is not None:
        if len(rec.data) < 2:
            out.append(Violation("rule3.data_len", f"data must hold at least 2 items (has {len(rec.data)})"))
        empty = [i for i, item in enumerate(rec.data) if not item.strip()]
        if empty:
            out.append(Violation("rule3.data_empty", f"data items {empty} are empty"))
    if rec.n is not None and rec.n < 2:
        out.append(Violation("rule3.n_min", f"n must be at least 2 (is {rec.n})"))
    if rec.template is None:
        out.append(Violation("rule5.template", "parallelizable is true but template is null"))
    else:
        out.extend(_check_template(rec))
    if rec.context is not None:  # rule 6
        if not rec.context.strip():
            out.append(Violation("rule6.context_empty", "context is empty; use null when nothing is shared"))
        elif rec.context not in rec.prompt:
            out.append(
                Violation(
                    "rule6.context_verbatim",
                    f"context is not a verbatim substring of the prompt: {_short(rec.context)!r}",
                )
            )
    if rec.data is not None:  # rule 7: verbatim unless a minimal paraphrase, so only a warning
        loose_prompt = normalize_space(rec.prompt).casefold()
        for i, item in enumerate(rec.data):
            if item.strip() and normalize_space(item).casefold() not in loose_prompt:
                out.append(
                    Violation(
                        "rule7.item_verbatim",
                        f"data[{i}] is not copied from the prompt (allowed only as a minimal paraphrase): {_short(item)!r}",
                        "warning",
                    )
                )
    return out


def errors(violations: list[Violation]) -> list[Violation]:
    return [v for v in violations if v.severity == "error"]


def normalize_space(text: str) -> str:
    return " ".join(text.split())


def _pydantic_reason(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "record"
        parts.append(f"field {loc!r}: {e['msg']}")
    return "; ".join(parts)


def parse_record(obj: dict[str, Any]) -> tuple[Record | None, list[Violation]]:
    """Typed record plus its violations; (None, [type violation]) when the types are wrong."""
    try:
        rec = Record.model_validate(obj)
    except ValidationError as err:
        return None, [Violation("types", _pydantic_reason(err))]
    return rec, check_record(rec)


def render_subprompts(rec: Record) -> list[str]:
    """The prompts to run: one per data item, or n copies; the prompt itself when serial."""
    if not rec.parallelizable or rec.template is None:
        return [rec.prompt]
    context = rec.context or ""
    if rec.data is not None:
        return [rec.template.format(context=context, data=item) for item in rec.data]
    return [rec.template.format(context=context)] * int(rec.n or 0)


def escape_braces(text: str) -> str:
    """Double literal braces so that `str.format` leaves the text unchanged."""
    return text.replace("{", "{{").replace("}", "}}")


# Template text between placeholders: any character but a brace, or a doubled literal brace.
_TEXT = r"(?:[^{}]|\{\{|\}\})"


def _template_pattern(placeholders: tuple[str, ...], max_chars: int) -> str:
    """Regex of a template holding each placeholder exactly once (any order) and no
    other single brace; at most `max_chars` characters of text around each placeholder."""
    text = f"{_TEXT}{{0,{max_chars}}}"
    if not placeholders:
        return f"^{_TEXT}{{1,{max_chars}}}$"
    orders = [placeholders] if len(placeholders) == 1 else [placeholders, placeholders[::-1]]
    alternatives = [text.join(re.escape("{" + p + "}") for p in order) for order in orders]
    return f"^{text}(?:{'|'.join(alternatives)}){text}$"


def output_json_schema(
    max_chars: int = 4096, max_items: int = 64, max_n: int = 1000, *, parallel_only: bool = False
) -> dict[str, Any]:
    """JSON Schema of the decomposer's output (the fields in DECOMPOSITION_FIELDS).

    Five variants: serial (all nulls); parallel over data items or n times, each with
    and without a shared context. Every key is required and ordered as
    DECOMPOSITION_FIELDS, so a grammar engine emits one canonical shape. The template's
    regex enforces rule 5 (each placeholder exactly once, none other, literal braces
    doubled); strings, lists and n are bounded so that any output, even a random
    model's, ends. What JSON Schema cannot express (context and items found in the
    prompt) is checked after decoding with `check_record`. `parallel_only` drops the
    serial variant: the grammar of a decomposition once the model has decided to split.
    """
    null = {"type": "null"}
    category = {"type": "string", "enum": list(CATEGORIES)}
    context = {"type": "string", "minLength": 1, "maxLength": max_chars}
    # an item starts with a visible character (whitespace-only items break rule 3)
    item = {"type": "string", "pattern": f"^\\S[\\s\\S]{{0,{max_chars - 1}}}$"}
    data = {"type": "array", "items": item, "minItems": 2, "maxItems": max_items}
    count = {"type": "integer", "minimum": 2, "maximum": max_n}

    def variant(props: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": props,
            "required": list(DECOMPOSITION_FIELDS),
            "additionalProperties": False,
        }

    def parallel(with_data: bool, with_context: bool) -> dict[str, Any]:
        placeholders = (("data",) if with_data else ()) + (("context",) if with_context else ())
        return variant(
            {
                "parallelizable": {"const": True},
                "category": category,
                "template": {"type": "string", "pattern": _template_pattern(placeholders, max_chars)},
                "context": context if with_context else null,
                "data": data if with_data else null,
                "n": null if with_data else count,
            }
        )

    serial = variant({"parallelizable": {"const": False}, **{f: null for f in DECOMPOSITION_FIELDS[1:]}})
    variants = [] if parallel_only else [serial]
    variants += [parallel(d, c) for d in (True, False) for c in (False, True)]
    return {"title": "Decomposition", "anyOf": variants}
