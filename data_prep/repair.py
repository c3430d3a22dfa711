"""Safe repairs for known label defects. A repair never changes what the
decomposition means: it re-cuts text that already matches the prompt up to
white space, drops fields the template never uses, strips list markers, escapes
literal braces, or turns a count placeholder into a one-output template.
Anything else that breaks a rule is dropped by the pipeline, with its reason.
"""

from __future__ import annotations

import re
from typing import Any

from data_prep.schema import template_fields

_LIST_MARKER = re.compile(r"^\s*(?:\(?\d{1,3}[.)\-:]|\(?[a-zA-Z][.)]|[-*•])\s+")
# "{n} sentence(s)", "{n} unique quiz(zes)": the plural marker of the first noun after {n}.
_COUNT_NOUN = re.compile(r"\{n\}((?:\s+[^\s{}()]+){0,3}?[^\s{}()]*?)\((?:s|es|zes|ies)\)")
_PLACEHOLDER = re.compile(r"\{(context|data|n)\}")


def find_loose(needle: str, haystack: str) -> str | None:
    """The span of `haystack` equal to `needle` up to white space, or None."""
    words = needle.split()
    if not words:
        return None
    pattern = r"\s+".join(re.escape(w) for w in words)
    m = re.search(pattern, haystack)
    return haystack[m.start() : m.end()] if m else None


def escape_literal_braces(template: str) -> str:
    """Double every brace that is not part of {context}, {data} or {n} (upstream
    templates were written for plain substitution, not str.format)."""
    parts = _PLACEHOLDER.split(template)
    out = []
    for i, part in enumerate(parts):
        if i % 2 == 1:  # a captured placeholder name
            out.append("{" + part + "}")
        else:
            out.append(part.replace("{", "{{").replace("}", "}}"))
    return "".join(out)


def one_output_template(template: str) -> str:
    """'Generate {n} slogan(s) for ...' -> 'Generate one slogan for ...'."""
    template = _COUNT_NOUN.sub(lambda m: "{n}" + m.group(1), template, count=1)
    return template.replace("{n}", "one")


def strip_list_markers(items: list[str]) -> list[str]:
    """Drop "1." / "-" / "a)" markers, only when every item carries one."""
    if all(_LIST_MARKER.match(item) for item in items):
        return [_LIST_MARKER.sub("", item, count=1) for item in items]
    return items


def repair(fields: dict[str, Any], *, upstream: bool) -> tuple[dict[str, Any], list[str]]:
    """Repaired copy of a raw record and the names of the repairs applied."""
    rec = dict(fields)
    notes: list[str] = []
    if not rec.get("parallelizable"):
        return rec, notes
    prompt = rec.get("prompt") or ""
    template = rec.get("template")
    if not isinstance(template, str):
        return rec, notes

    if upstream:
        escaped = escape_literal_braces(template)
        if escaped != template:
            notes.append("escaped_literal_braces")
            template = escaped
        if "{n}" in template and rec.get("n") is not None:
            template = one_output_template(template)
            notes.append("count_template_to_one_output")
    try:
        fields_used = template_fields(template)
    except ValueError:
        fields_used = []
    rec["template"] = template

    context = rec.get("context")
    if isinstance(context, str):
        if not context.strip() and "context" not in fields_used:  # "" stands for "nothing shared"
            rec["context"] = None
            notes.append("empty_context_to_null")
        elif context.strip() and context not in prompt:
            recut = find_loose(context, prompt)
            if recut is not None:
                rec["context"] = recut
                notes.append("recut_context_whitespace")

    data = rec.get("data")
    if isinstance(data, list) and all(isinstance(x, str) for x in data):
        items = strip_list_markers(data)
        if items != data:
            notes.append("stripped_list_markers")
        recut_items = []
        for item in items:
            if item not in prompt and (span := find_loose(item, prompt)) is not None:
                recut_items.append(span)
            else:
                recut_items.append(item)
        if recut_items != items:
            notes.append("recut_items_whitespace")
        rec["data"] = recut_items
    return rec, notes
