"""Anchors: a long span of the prompt written as ``first words…last words``.

The decomposer copies the shared context and the data items from the prompt. Copying a
2,000-character passage costs hundreds of decode steps; an anchor costs a dozen. An
anchor is resolved deterministically: the first occurrence of the head in the prompt,
then the first occurrence of the tail after it; the span runs from the head's start to
the tail's end.

Resolution is format-agnostic: a value found verbatim in the prompt is kept as is, so
outputs of a model trained to copy verbatim resolve to themselves.

`repair` is the decoder's second chance: when the model mis-copies a head or tail (a
word changed, a punctuation mark dropped), it places the part where it best matches.

`encode` picks the shortest anchor (at least `MIN_UNITS` words, or CJK characters, on
each side) that resolves back to exactly the span, and keeps the span verbatim when no
anchor is short enough or none resolves uniquely.
"""

from __future__ import annotations

import math
import re
from difflib import SequenceMatcher

SEP = "…"  # U+2026, one token in the tokenizers we use
MIN_CHARS = 40  # shorter spans are copied verbatim
MIN_UNITS = 3  # words (or CJK characters / punctuation marks) on each side of an anchor
MAX_UNITS = 10
MAX_RATIO = 0.6  # an anchor must be at most this fraction of the span's length
REPAIR_MATCH = 0.6  # `repair`: share of a mis-copied head/tail found as one block in the prompt
MIN_REPAIR_CHARS = 3

# A unit: one CJK / kana / hangul character, a run of word characters, or one other symbol.
_UNIT = re.compile(
    r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uac00-\ud7af]|[^\W\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]+|[^\w\s]"
)


def resolve(value: str, prompt: str) -> str:
    """The text a value stands for: itself when it is in the prompt (or is no anchor that
    resolves), else the prompt span from the anchor's head to its tail."""
    if value in prompt or SEP not in value:
        return value
    head, tail = value.split(SEP, 1)
    if not head or not tail:
        return value
    start = prompt.find(head)
    if start < 0:
        return value
    end = prompt.find(tail, start + len(head))
    if end < 0:
        return value
    return prompt[start : end + len(tail)]


def encode(span: str, prompt: str) -> str:
    """The shortest anchor for a span of the prompt that resolves back to it, else the span."""
    if len(span) < MIN_CHARS or span not in prompt:
        return span
    units = [m.span() for m in _UNIT.finditer(span)]
    for k in range(MIN_UNITS, MAX_UNITS + 1):
        if 2 * k > len(units):
            break
        head = span[: units[k - 1][1]]
        tail = span[units[-k][0] :]
        anchor = f"{head}{SEP}{tail}"
        if SEP in head or len(anchor) > MAX_RATIO * len(span):
            break
        if anchor not in prompt and resolve(anchor, prompt) == span:
            return anchor
    return span


def _near(part: str, text: str, lo: int) -> tuple[int, int] | None:
    """Where `part` best aligns in `text[lo:]`: (start, end) of its longest common block,
    stretched to the part's own length; None when the block is under REPAIR_MATCH of it."""
    m = SequenceMatcher(None, text, part, autojunk=False).find_longest_match(lo, len(text), 0, len(part))
    if m.size < max(MIN_REPAIR_CHARS, math.ceil(REPAIR_MATCH * len(part))):
        return None
    return max(lo, m.a - m.b), min(len(text), m.a + len(part) - m.b)


def repair(value: str, prompt: str) -> str | None:
    """The prompt span a mis-copied anchor most likely stands for, or None.

    A small model writes the head or tail of an anchor almost right ("de la llegada."
    for "antes de la llegada;"). A part that is not in the prompt is placed where its
    longest common block with the prompt is (at least REPAIR_MATCH of its characters);
    a start so found moves back to the beginning of its word, an end so found forward
    to the end of its line, the usual edges of a passage. Only for values `resolve`
    leaves unresolved; exact anchors never reach it."""
    if SEP not in value or value in prompt:
        return None
    head, tail = value.split(SEP, 1)[0], value.rsplit(SEP, 1)[1]
    if not head.strip() or not tail.strip():
        return None
    start = prompt.find(head)
    if start >= 0:
        after = start + len(head)
    else:
        near = _near(head, prompt, 0)
        if near is None:
            return None
        start, after = near
        while start > 0 and prompt[start - 1].isalnum():
            start -= 1
    end = prompt.find(tail, after)
    if end >= 0:
        end += len(tail)
    else:
        near = _near(tail, prompt, after)
        if near is None:
            return None
        line_end = prompt.find("\n", near[1] - 1)
        end = len(prompt) if line_end < 0 else line_end
    span = prompt[start:end].strip()
    return span if len(span) >= MIN_CHARS else None


def is_anchor(value: str, prompt: str) -> bool:
    return value not in prompt and resolve(value, prompt) != value
