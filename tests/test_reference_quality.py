"""Reference-based scorers (eval/e2e/reference.py) on known answers: the committed reference
set loads, a right answer outscores a wrong one in every category, a missing item lowers
coverage, CJK answers are matched per character, and the paired bootstrap brackets the ratio."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT

from eval.e2e.reference import (
    SCORED,
    ReferenceError,
    Scorer,
    bootstrap_retention,
    contains,
    coverage,
    load_references,
    summarize,
    token_f1,
)

REFERENCE = ROOT / "data" / "raw" / "reference"


@pytest.fixture(scope="module")
def refs():
    return load_references(REFERENCE)


@pytest.fixture(scope="module")
def scorer():
    return Scorer()


def by_category(refs, category, language="en"):
    return next(r for r in refs if r.record.category == category and r.record.language == language)


def gold_answer(ref) -> str:
    """An answer that gives each item's first gold answer on its own line."""
    return "\n".join(
        f"{i + 1}. {r.answers[0] if len(r.answers) == 1 else ', '.join(r.answers)}"
        for i, r in enumerate(ref.references)
    )


def test_the_committed_reference_set_loads(refs):
    assert len(refs) == 90
    assert {r.record.language for r in refs} == {"ar", "de", "en", "es", "fr", "ja", "ko", "pt", "ru", "zh"}
    assert all(len(r.references) == len(r.record.data) for r in refs)


@pytest.mark.parametrize("category", SCORED)
def test_right_answer_beats_wrong_answer(refs, scorer, category):
    for language in ("en", "zh"):
        ref = by_category(refs, category, language)
        right = scorer.item_scores(ref, gold_answer(ref))
        other = by_category(
            refs, "reading_comprehension" if category != "reading_comprehension" else "translation", language
        )
        wrong = scorer.item_scores(ref, gold_answer(other))
        assert sum(right) > sum(wrong), (category, language, right, wrong)
        assert min(right) > 0.5, (category, language, right)


def test_a_missing_item_lowers_coverage(refs, scorer):
    ref = by_category(refs, "reading_comprehension")
    full = scorer.item_scores(ref, gold_answer(ref))
    partial_text = "\n".join(r.answers[0] for r in ref.references[:-1])
    partial = scorer.item_scores(ref, partial_text)
    assert coverage(full) == 1.0
    assert coverage(partial) < coverage(full) and partial[-1] < full[-1]
    assert scorer.item_scores(ref, "") == [0.0] * len(ref.references)


def test_sentiment_reads_one_verdict_per_review(refs, scorer):
    ref = by_category(refs, "sentiment_analysis")
    labels = [r.answers[0] for r in ref.references]
    assert scorer.item_scores(ref, "\n".join(labels)) == [1.0] * len(labels)
    shifted = labels[1:] + labels[:1]
    assert sum(scorer.item_scores(ref, "\n".join(shifted))) < len(labels)


def test_normalisation_and_cjk():
    assert contains("The answer is: EIGHT weeks.", "eight weeks")
    assert not contains("eighty weeks", "eight weeks")
    assert contains("答案是苏州工业园区。", "苏州 工业园区")
    assert token_f1("北京大学", "北京") == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    assert token_f1("anything", "") == 0.0


def test_bootstrap_interval_brackets_the_ratio():
    serial = [1.0, 0.8, 0.9, 1.0, 0.7, 0.6, 1.0, 0.9]
    parallel = [0.9, 0.8, 0.7, 1.0, 0.7, 0.5, 0.8, 0.9]
    r = bootstrap_retention(serial, parallel)
    assert r["retention"] == pytest.approx(sum(parallel) / sum(serial), abs=1e-4)
    assert r["low"] <= r["retention"] <= r["high"] <= 1.0
    assert bootstrap_retention([0.0, 0.0], [1.0, 1.0])["retention"] is None
    rows = [{"category": "x", "serial": [1.0, 1.0], "parallel": [1.0, 0.0]}]
    out = summarize(rows, "category")["x"]
    assert out["parallel_coverage"] == 0.5 and out["retention"] == 0.5


def test_bad_reference_lines_are_named(tmp_path, refs):
    good = json.loads((REFERENCE / "en.jsonl").read_text(encoding="utf-8").splitlines()[0])
    bad = dict(good, references=good["references"][:-1])
    (tmp_path / "x.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\nnot json\n", encoding="utf-8")
    with pytest.raises(ReferenceError, match=r"2 bad reference line\(s\)") as err:
        load_references(tmp_path)
    assert "x.jsonl:2: `references` must hold one {item, answers}" in str(err.value)
    assert "x.jsonl:3: invalid JSON" in str(err.value)
