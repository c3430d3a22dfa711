"""The in-process decomposer: every output becomes a valid record (serial fallback with
a reason), batched generation with left padding, the CLI's clear errors; and the quick
base-vs-adapter comparison scores and resumes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT

from data_prep.schema import Record, check_record, errors
from models.decomposer import HFDecomposer, to_record

PROMPT = "Translate into German:\n1. Good morning\n2. Thank you"


def test_to_record_uses_a_valid_decomposition():
    raw = json.dumps(
        {
            "parallelizable": True,
            "category": "translation",
            "template": "Translate into German: {data}",
            "context": None,
            "data": ["Good morning", "Thank you"],
            "n": None,
        }
    )
    rec, valid_json, reason = to_record(raw, prompt=PROMPT, rid="x", language="en")
    assert valid_json and reason is None and rec.parallelizable and rec.data == ["Good morning", "Thank you"]


@pytest.mark.parametrize(
    "raw, reason",
    [
        ('{"parallelizable": true, "category": "transl', "not valid JSON"),
        ('["a"]', "not an object"),
        (
            json.dumps(
                {
                    "parallelizable": True,
                    "category": "translation",
                    "template": "Translate",
                    "context": None,
                    "data": ["Good morning", "Thank you"],
                    "n": None,
                }
            ),
            "rule5.data_placeholder",
        ),
        (
            json.dumps(
                {
                    "parallelizable": True,
                    "category": "translation",
                    "template": "{context} {data}",
                    "context": "not in the prompt",
                    "data": ["a", "b"],
                    "n": None,
                }
            ),
            "rule6.context_verbatim",
        ),
    ],
)
def test_bad_outputs_fall_back_to_serial_with_reason(raw, reason):
    rec, _, why = to_record(raw, prompt=PROMPT, rid="x", language="en")
    assert not rec.parallelizable and rec.prompt == PROMPT and reason in why
    assert errors(check_record(rec)) == []


def test_tiny_model_batch_always_yields_valid_records(tiny_model_dir):
    decomposer = HFDecomposer(str(tiny_model_dir), max_new_tokens=24)
    prompts = [PROMPT, "hi", "Give me 5 slogans for a bakery called Crumb, each under 6 words."]
    results = decomposer.decompose(prompts, ["a", "b", "c"], batch_size=2)
    assert [r.record.id for r in results] == ["a", "b", "c"]
    for prompt, r in zip(prompts, results, strict=True):
        assert r.record.prompt == prompt and errors(check_record(r.record)) == []
        assert 1 <= r.generated_tokens <= 24
        assert (r.fallback_reason is None) == r.record.parallelizable or r.fallback_reason


def test_cli_errors(tmp_path):
    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "models.decompose", *args], capture_output=True, text=True, cwd=ROOT
        )

    proc = run("--prompt", "  ")
    assert proc.returncode == 2 and "empty" in proc.stderr
    proc = run("--prompt", "x", "--adapter", str(tmp_path))
    assert proc.returncode == 2 and "not a LoRA adapter folder" in proc.stderr


def test_quick_compare_scores_and_resumes(tmp_path, tiny_model_dir, built_default, monkeypatch):
    from eval import quick_compare

    gold = quick_compare.load_gold(str(built_default[0] / "validation.jsonl"), limit=4, seed=0)
    preds = quick_compare.run_system("base", str(tiny_model_dir), None, gold, tmp_path, batch_size=4, max_new_tokens=8)
    assert [p["id"] for p in preds] == [g.id for g in gold]
    scores = quick_compare.score(gold, preds)
    assert scores["prompts"] == 4 and 0.0 <= scores["parallelizable_accuracy"] <= 1.0
    # a rerun reads the saved predictions instead of decoding again
    monkeypatch.setattr("models.decomposer.HFDecomposer.__init__", lambda *a, **k: pytest.fail("decoded again"))
    again = quick_compare.run_system("base", str(tiny_model_dir), None, gold, tmp_path, batch_size=4, max_new_tokens=8)
    assert again == preds


def test_score_counts():
    from eval.quick_compare import score

    gold = [
        Record(
            id=str(i),
            source="t",
            language="en",
            prompt="p",
            parallelizable=par,
            category="other" if par else None,
            template="x {data}" if par else None,
            data=["a", "b"] if par else None,
        )
        for i, par in enumerate([True, True, False, False])
    ]
    preds = [
        {
            "valid_json": True,
            "schema_valid": True,
            "pred_parallelizable": p,
            "pred_category": "other" if p else None,
            "tokens": 10,
            "seconds": 1.0,
        }
        for p in [True, False, True, False]
    ]
    s = score(gold, preds)
    assert (
        s["parallelizable_accuracy"] == 0.5
        and s["parallelizable_precision"] == 0.5
        and s["parallelizable_recall"] == 0.5
    )
    assert s["category_accuracy_on_true_positives"] == 1.0
