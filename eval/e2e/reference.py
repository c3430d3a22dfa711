"""Reference-based quality: a serial answer and a reassembled parallel answer scored
against gold, per sub-task, with no judge.

The reference set (`data/raw/reference/*.jsonl`, data card in `data/README.md`) is schema
records plus `references`: per data item, the gold answers. Each item of a prompt is scored
against the whole answer text (the serial answer, or the parallel branches joined), the same
way for both, so the two are comparable:

- reading comprehension, NER, keyword extraction: **containment**, whether a gold answer
  (any of them; for NER each gold entity) occurs in the answer after normalisation (case,
  punctuation, whitespace; `normalize`), and for reading comprehension also SQuAD-style token
  F1 of the best-matching answer line (CJK scripts tokenised per character);
- translation, language correction: **chrF** (`eval/metrics/chrf`, sacrebleu) of the best
  answer line against the reference;
- sentiment: the item's label, and no other label of the prompt's set, is named in the
  item's verdict line (the k-th line naming a label when there is one per item, else the
  line that quotes the review best).

An item's score is in [0, 1]; `coverage` is the share of items with a non-zero score.
`retention` is the parallel mean over the serial mean with a paired bootstrap interval over
prompts (`bootstrap_retention`).
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_prep.loaders import DataFormatError, load_schema_jsonl
from data_prep.schema import Record, check_record, errors
from eval.decomposer.metrics import CHRF_MODULE

SCORED = (
    "reading_comprehension",
    "named_entity_recognition",
    "keyword_extraction",
    "translation",
    "language_correction",
    "sentiment_analysis",
)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")


class ReferenceError(ValueError):
    pass


@dataclass(frozen=True)
class ReferenceItem:
    item: str
    answers: tuple[str, ...]


@dataclass(frozen=True)
class ReferencePrompt:
    record: Record
    references: tuple[ReferenceItem, ...]


def load_references(path: str | Path) -> list[ReferencePrompt]:
    """A reference file or folder of `*.jsonl`; every line is checked (schema rules, one
    reference per data item in order, non-empty answers), all errors named at once."""
    try:
        raw, problems = load_schema_jsonl(path)
    except DataFormatError as err:
        raise ReferenceError(str(err)) from None
    bad = [f"{p.origin}: {p.reason}" for p in problems]
    out = []
    for r in raw:
        obj = dict(r.fields)
        refs = obj.pop("references", None)
        violations = errors(check_record(obj))
        if violations:
            bad.append(f"{r.origin}: {violations[0]}")
            continue
        rec = Record.model_validate(obj)
        if rec.category not in SCORED or not rec.data:
            bad.append(f"{r.origin}: category {rec.category!r} with data items is needed for a reference")
        elif not isinstance(refs, list) or [x.get("item") for x in refs if isinstance(x, dict)] != rec.data:
            bad.append(f"{r.origin}: `references` must hold one {{item, answers}} per data item, in order")
        elif not all(_answers_ok(x.get("answers")) for x in refs):
            bad.append(f"{r.origin}: every reference needs a non-empty list of non-empty answers")
        else:
            out.append(ReferencePrompt(rec, tuple(ReferenceItem(x["item"], tuple(x["answers"])) for x in refs)))
    if bad:
        raise ReferenceError(f"{len(bad)} bad reference line(s): " + "; ".join(bad[:10]))
    return out


def _answers_ok(answers: Any) -> bool:
    return isinstance(answers, list) and bool(answers) and all(isinstance(a, str) and a.strip() for a in answers)


def normalize(text: str) -> str:
    """Casefold, punctuation and symbols to spaces, NFKC, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in text)
    return " ".join(text.split())


def tokens(text: str) -> list[str]:
    """Words, with each CJK character its own token (SQuAD's whitespace split does not apply)."""
    out: list[str] = []
    for word in normalize(text).split():
        if _CJK.search(word):
            out.extend(c for c in word if not c.isspace())
        else:
            out.append(word)
    return out


def token_f1(prediction: str, gold: str) -> float:
    p, g = tokens(prediction), tokens(gold)
    common = sum((Counter(p) & Counter(g)).values())
    if not p or not g or not common:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def contains(answer: str, gold: str) -> bool:
    a, g = normalize(answer), normalize(gold)
    if not g:
        return False
    if _CJK.search(g):
        return g.replace(" ", "") in a.replace(" ", "")
    return f" {g} " in f" {a} "


def lines(answer: str) -> list[str]:
    parts = [ln.strip() for ln in answer.splitlines() if ln.strip()]
    return parts or [answer]


class Scorer:
    """Scores one answer text for every item of a reference prompt."""

    def __init__(self) -> None:
        import evaluate

        self._chrf = evaluate.load(CHRF_MODULE)

    def chrf(self, candidates: list[str], reference: str) -> float:
        scores = self._chrf.compute(predictions=candidates, references=[reference] * len(candidates))["scores"]
        return max(scores) / 100.0 if scores else 0.0

    def item_scores(self, ref: ReferencePrompt, answer: str) -> list[float]:
        category = ref.record.category
        labels = {a for r in ref.references for a in r.answers} if category == "sentiment_analysis" else set()
        n = len(ref.references)
        return [self._score(category, r, answer, labels, i, n) for i, r in enumerate(ref.references)]

    def _score(self, category: str, ref: ReferenceItem, answer: str, labels: set[str], index: int, n: int) -> float:
        if not answer.strip():
            return 0.0
        if category == "reading_comprehension":
            if any(contains(answer, g) for g in ref.answers):
                return 1.0
            return max(token_f1(line, g) for line in lines(answer) for g in ref.answers)
        if category == "named_entity_recognition":
            return sum(contains(answer, g) for g in ref.answers) / len(ref.answers)
        if category == "keyword_extraction":
            return float(any(contains(answer, g) for g in ref.answers))
        if category in ("translation", "language_correction"):
            return max(self.chrf(lines(answer), g) for g in ref.answers)
        if category == "sentiment_analysis":
            labelled = [ln for ln in lines(answer) if any(contains(ln, lab) for lab in labels)]
            if len(labelled) == n:  # one verdict line per review, in order
                line = labelled[index]
            elif n == 1:
                line = answer
            else:  # the line that quotes the review best
                line = max(labelled or [answer], key=lambda ln: token_f1(ln, ref.item))
            named = {lab for lab in labels if contains(line, lab)}
            return float(named == set(ref.answers))
        raise ReferenceError(f"no reference scorer for category {category!r}")


def coverage(scores: list[float]) -> float:
    return sum(s > 0 for s in scores) / len(scores) if scores else 0.0


def bootstrap_retention(
    serial: list[float], parallel: list[float], samples: int = 2000, seed: int = 0, alpha: float = 0.05
) -> dict[str, float | None]:
    """Retention = mean(parallel) / mean(serial) over prompts (paired), with a percentile
    bootstrap interval; None where the serial mean is 0."""
    if len(serial) != len(parallel):
        raise ValueError("serial and parallel scores must be paired")
    n = len(serial)
    if not n or sum(serial) == 0:
        return {"retention": None, "low": None, "high": None, "prompts": n}
    rng = random.Random(seed)
    draws = []
    for _ in range(samples):
        idx = [rng.randrange(n) for _ in range(n)]
        s = sum(serial[i] for i in idx)
        if s > 0:
            draws.append(sum(parallel[i] for i in idx) / s)
    draws.sort()
    lo, hi = draws[int(alpha / 2 * len(draws))], draws[min(len(draws) - 1, int((1 - alpha / 2) * len(draws)))]
    return {"retention": round(sum(parallel) / sum(serial), 4), "low": round(lo, 4), "high": round(hi, 4), "prompts": n}


def summarize(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    """rows: {"language", "category", "serial": [item scores], "parallel": [item scores]};
    per group of `key`: mean item score of each, coverage of each, retention with its CI."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r[key], []).append(r)
    out = {}
    for name, rs in sorted(groups.items()):
        serial = [sum(r["serial"]) / len(r["serial"]) for r in rs]
        parallel = [sum(r["parallel"]) / len(r["parallel"]) for r in rs]
        out[name] = {
            "serial": round(sum(serial) / len(serial), 4),
            "parallel": round(sum(parallel) / len(parallel), 4),
            "serial_coverage": round(sum(coverage(r["serial"]) for r in rs) / len(rs), 4),
            "parallel_coverage": round(sum(coverage(r["parallel"]) for r in rs) / len(rs), 4),
            **bootstrap_retention(serial, parallel),
        }
    return out
