"""A rule-based decomposer: the baseline a learned decomposer has to beat.

Regular expressions on list markers and counts, no model:

- a list of two or more marked lines ("1.", "2)", "-", "•", "①", "（3）", "a)") gives one
  data item per line (verbatim, marker dropped); the text before the list is the
  instruction, or, when it is long, the shared context;
- otherwise a short prompt with one count from 2 to 50 ("Give me 5 slogans", "写5个标题")
  gives n repeated generations of the prompt with the count set to 1;
- anything else is serial.

The category comes from a small multilingual keyword table ("other" when none match).
Its output goes through the same parsing and schema checks as a model's, so a rule that
produces a broken record falls back to serial like any decomposer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from data_prep.list_markers import LIST_MARKER
from data_prep.schema import escape_braces
from models.decomposer.base import Decomposer, Generation

_MARKER = re.compile(rf"^[ \t]*{LIST_MARKER}[ \t]*(?P<item>\S[^\n]*?)[ \t]*$", re.MULTILINE)
# a count is followed by the thing counted ("5 slogans", "5个", "5つ"), not by "%", "?" or a digit
_COUNT = re.compile(r"(?<![\d.,])(?P<n>[2-9]|[1-4]\d|50)(?=[ \t]?[^\W\d_])")
LONG_HEAD_CHARS = 300  # a longer text before the list is shared context, not instruction
MAX_COUNT_PROMPT_CHARS = 300  # the count rule only fires on short requests

# first match wins; lower-cased substrings in the languages of the data
CATEGORY_KEYWORDS: list[tuple[str, tuple[str, ...]]] = [
    ("translation", ("translat", "traduc", "tradu", "übersetz", "翻译", "翻訳", "번역", "перев", "ترجم")),
    (
        "language_correction",
        (
            "grammar",
            "correct",
            "fix the",
            "gramm",
            "korrigier",
            "corrig",
            "исправ",
            "改正",
            "修改",
            "校正",
            "添削",
            "교정",
            "문법",
            "صحح",
            "تصحيح",
        ),
    ),
    (
        "sentiment_analysis",
        ("sentiment", "positive or negative", "stimmung", "情感", "感情", "감정", "тональн", "مشاعر"),
    ),
    ("named_entity_recognition", ("entit", "entidad", "实体", "固有表現", "개체명", "сущност", "كيانات")),
    (
        "keyword_extraction",
        (
            "keyword",
            "extract",
            "palabras clave",
            "schlüssel",
            "关键词",
            "キーワード",
            "키워드",
            "ключев",
            "extrai",
            "extrae",
            "استخرج",
        ),
    ),
    ("reading_comprehension", ("question", "answer", "pregunta", "frage", "вопрос", "问题", "質問", "질문", "سؤال")),
]


def guess_category(text: str) -> str:
    low = text.lower()
    for category, words in CATEGORY_KEYWORDS:
        if any(w in low for w in words):
            return category
    return "other"


def list_decomposition(prompt: str) -> dict[str, Any] | None:
    """Fields for a prompt holding a marked list of two or more lines, else None."""
    matches = list(_MARKER.finditer(prompt))
    runs: list[list[re.Match]] = []
    for m in matches:  # consecutive marked lines (blank lines allowed between them)
        if runs and not prompt[runs[-1][-1].end() : m.start()].strip():
            runs[-1].append(m)
        else:
            runs.append([m])
    run = max(runs, key=len, default=[])
    if len(run) < 2:
        return None
    head, tail = prompt[: run[0].start()].strip(), prompt[run[-1].end() :].strip()
    items = [m.group("item") for m in run]
    text_after = f"\n{escape_braces(tail)}" if tail else ""
    if len(head) > LONG_HEAD_CHARS:
        template, context = "{context}\n\n{data}" + text_after, head
    else:
        template, context = (escape_braces(head) + "\n" if head else "") + "{data}" + text_after, None
    return {
        "parallelizable": True,
        "category": guess_category(head + " " + tail),
        "template": template,
        "context": context,
        "data": items,
        "n": None,
    }


def count_decomposition(prompt: str) -> dict[str, Any] | None:
    """Fields for a short prompt with exactly one count from 2 to 50, else None."""
    if len(prompt) > MAX_COUNT_PROMPT_CHARS:
        return None
    counts = list(_COUNT.finditer(prompt))
    if len(counts) != 1:
        return None
    m = counts[0]
    template = escape_braces(prompt[: m.start()]) + "1" + escape_braces(prompt[m.end() :])
    return {
        "parallelizable": True,
        "category": "repeated_generation",
        "template": template,
        "context": None,
        "data": None,
        "n": int(m.group("n")),
    }


SERIAL = {"parallelizable": False, "category": None, "template": None, "context": None, "data": None, "n": None}


@dataclass(kw_only=True)
class RuleDecomposer(Decomposer):
    """The regex baseline behind the `Decomposer` interface (backend ``rules``)."""

    def __post_init__(self) -> None:
        self.backend = "rules"
        self.fmt = "json-v2"  # its output is verbatim JSON, parsed like a model's

    def _generate(self, prompts: list[str], schema: dict[str, Any] | None = None) -> list[Generation]:
        out = []
        for prompt in prompts:
            fields = list_decomposition(prompt) or count_decomposition(prompt) or SERIAL
            out.append(Generation(json.dumps(fields, ensure_ascii=False), 0, True))
        return out
