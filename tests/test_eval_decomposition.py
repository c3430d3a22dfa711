"""eval.decomposer.metrics on hand-made predictions with known answers, and gold as its own
prediction (every metric at its maximum)."""

from __future__ import annotations

import json

import pytest

from eval.decomposer.metrics import evaluate_predictions, main, normalize_item


def rec(rid, par, **kw):
    base = {
        "id": rid,
        "source": kw.pop("source", "s"),
        "language": kw.pop("language", "en"),
        "prompt": kw.pop("prompt"),
    }
    fields = {"parallelizable": par, "category": None, "template": None, "context": None, "data": None, "n": None}
    return {**base, **fields, **kw}


PROMPT_T = "Translate into German:\n1. Good morning\n2. Thank you\n3. Bye"
GOLD = {
    "t": rec("t", True, prompt=PROMPT_T, category="translation", template="Translate into German: {data}",
             data=["Good morning", "Thank you", "Bye"]),
    "n": rec("n", True, prompt="Give me 3 slogans", category="repeated_generation", template="Give me a slogan", n=3,
             language="de"),
    "s": rec("s", False, prompt="hello"),
    "x": rec("x", False, prompt="one question?"),
}  # fmt: skip


def test_known_answers():
    preds = {
        # true positive: 2 of 3 items (one with a list marker and different case), category right
        "t": {**GOLD["t"], "data": ["1. good morning", "Thank you"], "template": "Translate to German: {data}"},
        # true positive with the wrong n and the wrong category
        "n": {**GOLD["n"], "n": 4, "category": "other"},
        # false positive
        "s": rec("s", True, prompt="hello", category="other", template="x {data}", data=["hel", "lo"]),
        # "x" missing: counts as serial (a true negative here) and as not schema-valid
    }
    m = evaluate_predictions(preds, GOLD, with_chrf=False)["overall"]
    assert m["count"] == 4 and m["missing_predictions"] == 1 and m["schema_valid"] == 0.75
    assert m["true_positives"] == 2 and m["parallelizable_precision"] == round(2 / 3, 4)
    assert m["parallelizable_recall"] == 1.0 and m["parallelizable_accuracy"] == 0.75
    assert m["category_accuracy"] == 0.5 and m["exact_n"] == 0.0
    assert m["item_precision"] == 1.0 and m["item_recall"] == round(2 / 3, 4) and m["item_f1"] == 0.8
    assert m["template_valid"] == 1.0 and m["context_exact"] is None


def test_splits_have_counts():
    result = evaluate_predictions(GOLD, GOLD, with_chrf=False)
    assert result["by_language"]["de"]["count"] == 1 and result["by_language"]["en"]["count"] == 3
    assert result["by_category"]["(not parallelizable)"]["count"] == 2


def test_gold_against_itself_is_perfect(tmp_path, labelled_rows):
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in labelled_rows[:60]))
    assert main(["--pred", str(gold), "--gold", str(gold), "--out", str(tmp_path / "out")]) == 0
    m = json.loads((tmp_path / "out/metrics.json").read_text())["overall"]
    for key in ("schema_valid", "parallelizable_f1", "category_accuracy", "item_f1", "template_valid"):
        assert m[key] == 1.0, key
    assert m["template_chrf"] == pytest.approx(100.0)
    assert "## by language" in (tmp_path / "out/metrics.md").read_text()


def test_normalize_item():
    assert normalize_item("  1. Good   Morning! ") == "good morning"
    assert normalize_item("- «Hola»") == "hola"
