"""Offline language identification (py3langid, a numpy port of langid.py).

`language` in the schema is the language of the *instruction*, so mixed-language
prompts ("translate these German sentences into English") are labelled by the
words the user wrote, not by the material they pasted. We therefore classify the
template's own text when a decomposition gives one (it is in the prompt's own
language and holds the instruction), and otherwise the prompt with fenced code
blocks removed.

Accuracy against the Claude labels: `python -m data_prep.langid data/raw/labeled/claude_multilingual.jsonl`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from functools import lru_cache
from typing import Any

# langid.py splits some languages more finely than ISO 639-1 labels do.
# Labels without an ISO 639-1 code that are not aliased are never predicted.
_ALIASES = {"wuu": "zh", "yue": "zh", "nb": "no", "nn": "no", "arz": "ar", "ary": "ar", "uzs": "uz", "gug": "gn"}
_CODE_BLOCK = re.compile(r"```.*?(```|$)", re.S)
_PLACEHOLDER = re.compile(r"\{(context|data)\}")
MIN_TEMPLATE_LETTERS = 15  # fewer (e.g. '**Question:** {data}') says too little to classify


@lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    ident = LanguageIdentifier.from_model_file(MODEL_FILE)
    ident.set_languages([code for code in ident.labels if len(code) == 2 or code in _ALIASES])
    return ident


def detect(text: str) -> str:
    """ISO 639-1 code of the text's language (always two lowercase letters)."""
    code, _ = _identifier().classify(text)
    return _ALIASES.get(code, code)


def instruction_text(fields: dict[str, Any]) -> str:
    """The text whose language is the record's language."""
    template = fields.get("template")
    if isinstance(template, str):
        own = _PLACEHOLDER.sub(" ", template).strip()
        if sum(ch.isalpha() for ch in own) >= MIN_TEMPLATE_LETTERS:
            return own
    prompt = fields.get("prompt") or ""
    without_code = _CODE_BLOCK.sub(" ", prompt).strip()
    return without_code or prompt


def detect_record_language(fields: dict[str, Any]) -> str:
    return detect(instruction_text(fields))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Language-ID accuracy against labelled schema JSONL files.")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    total = correct = 0
    confusions: Counter[tuple[str, str]] = Counter()
    for path in args.files:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                rec = json.loads(line)
                pred = detect_record_language(rec)
                total += 1
                correct += pred == rec["language"]
                if pred != rec["language"]:
                    confusions[(rec["language"], pred)] += 1
    if not total:
        print("no records", file=sys.stderr)
        return 1
    print(f"language-id accuracy: {correct}/{total} = {correct / total:.3f}")
    for (gold, pred), count in confusions.most_common(10):
        print(f"  {gold} -> {pred}: {count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
