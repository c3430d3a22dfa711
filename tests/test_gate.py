"""The decision gate on the tiny random Qwen2: a prompt below the threshold becomes serial
with nothing decoded, one above it is decoded under the parallel-only grammar, padding
does not move the probabilities, the threshold stored with an adapter is the default,
and training and inference read the same minimal system prompt."""

from __future__ import annotations

import json

import pytest

from data_prep.formatting import DECISION_PREFIX, FORMAT_FILE, FORMATS, MINIMAL_INSTRUCTION, decision_tokens
from data_prep.schema import check_record, errors, output_json_schema
from models.decomposer import DecomposerError
from models.decomposer.calibration import CALIBRATION_FILE, DEFAULT_THRESHOLD
from models.decomposer.hf_backend import HFDecomposer

PROMPTS = [
    "Translate into German:\n1. Good morning\n2. Thank you",
    "hi",
    "Give me 5 slogans for a bakery called Crumb, each under 6 words.",
    "Write a short poem about the sea.",
]
SMALL = {"schema": output_json_schema(max_chars=24, max_items=4, max_n=99), "max_new_tokens": 6 * 24 * 6 + 120}


@pytest.fixture(scope="module")
def gated(tiny_model_dir):
    return HFDecomposer(model=str(tiny_model_dir), **SMALL)


def test_decision_tokens_of_real_and_tiny_tokenizers(tiny_tokenizer):
    d = decision_tokens(tiny_tokenizer)
    assert tiny_tokenizer.decode(d.prefix_ids) == DECISION_PREFIX
    assert tiny_tokenizer.decode([d.true_id]) == "true" and tiny_tokenizer.decode([d.false_id]) == "false"


def test_probabilities_do_not_depend_on_batch_padding(gated):
    batched = gated.decision_probs(PROMPTS)
    alone = [gated.decision_probs([p])[0] for p in PROMPTS]
    assert batched == pytest.approx(alone, abs=1e-5)
    assert all(0.0 < p < 1.0 for p in batched)


def test_a_prompt_below_the_threshold_is_serial_with_no_decoding(gated):
    probs = gated.decision_probs(PROMPTS)
    ranked = sorted(probs)
    gated.threshold = (ranked[1] + ranked[2]) / 2  # two prompts below, two above
    try:
        results = gated.decompose(PROMPTS, batch_size=4)
    finally:
        gated.threshold = DEFAULT_THRESHOLD
    for p, r in zip(probs, results, strict=True):
        assert r.p_parallel == pytest.approx(p, abs=1e-6)
        assert errors(check_record(r.record)) == []
        if p < (ranked[1] + ranked[2]) / 2:  # below: decided serial after one prefill, 0 decode steps
            assert not r.record.parallelizable and r.generated_tokens == 0 and r.fallback_reason is None
            assert r.raw == DECISION_PREFIX + "false"
        else:  # above: decoded, and only a parallel decomposition can come out of the grammar
            assert r.generated_tokens > 0 and r.raw.startswith(DECISION_PREFIX + "true")


def test_negatives_cost_no_decode_steps_where_the_full_grammar_costs_many(tiny_model_dir):
    gate = HFDecomposer(model=str(tiny_model_dir), threshold=1.0, **SMALL)  # nothing reaches 1.0
    full = HFDecomposer(model=str(tiny_model_dir), gate=False, **SMALL)
    gated_results = gate.decompose(PROMPTS, batch_size=4)
    assert [r.generated_tokens for r in gated_results] == [0] * len(PROMPTS)
    assert all(not r.record.parallelizable for r in gated_results)
    full_results = full.decompose(PROMPTS, batch_size=4)
    opening = len(decision_tokens(full.tokenizer).prefix_ids) + 1
    assert all(r.generated_tokens > opening for r in full_results)  # the whole JSON, serial or not


def test_threshold_comes_from_the_adapter_or_the_option(trained, tiny_model_dir, tmp_path):
    import shutil

    adapter = tmp_path / "adapter"
    shutil.copytree(trained[0] / "out", adapter)
    assert HFDecomposer(model=str(tiny_model_dir), adapter=str(adapter)).threshold == DEFAULT_THRESHOLD
    (adapter / CALIBRATION_FILE).write_text(json.dumps({"threshold": 0.83, "target_precision": 0.95}))
    assert HFDecomposer(model=str(tiny_model_dir), adapter=str(adapter)).threshold == 0.83
    assert HFDecomposer(model=str(tiny_model_dir), adapter=str(adapter), threshold=0.2).threshold == 0.2
    (adapter / CALIBRATION_FILE).write_text(json.dumps({"threshold": "high"}))
    with pytest.raises(DecomposerError, match="threshold must be a number"):
        HFDecomposer(model=str(tiny_model_dir), adapter=str(adapter))


def test_training_and_inference_read_the_same_minimal_prompt(trained, tiny_model_dir, built_default):
    import datasets

    adapter = trained[0] / "out"
    recorded = json.loads((adapter / FORMAT_FILE).read_text())
    assert recorded == {"format_version": "anchor-v2", "system_prompt": MINIMAL_INSTRUCTION}
    trained_on = datasets.load_from_disk(str(built_default[0] / "sft"))["train"][0]["prompt"][0]
    assert trained_on == {"role": "system", "content": MINIMAL_INSTRUCTION}
    decomposer = HFDecomposer(model=str(tiny_model_dir), adapter=str(adapter), max_new_tokens=8)
    assert decomposer.messages("x")[0] == trained_on
    assert len(MINIMAL_INSTRUCTION.split()) <= 12 < len(FORMATS["anchor-v1"].system_prompt.split())
    # an adapter whose recorded prompt differs from the code's is refused, not served with the wrong one
    (adapter / FORMAT_FILE).write_text(json.dumps({**recorded, "system_prompt": "Something else."}))
    try:
        with pytest.raises(DecomposerError, match="differs from format"):
            HFDecomposer(model=str(tiny_model_dir), adapter=str(adapter))
    finally:
        (adapter / FORMAT_FILE).write_text(json.dumps(recorded))


def test_calibrate_cli_stores_the_threshold_and_the_card_section(trained, tiny_model_dir, built_default, tmp_path):
    import shutil
    import subprocess
    import sys

    from conftest import ROOT

    adapter = tmp_path / "adapter"
    shutil.copytree(trained[0] / "out", adapter)
    cmd = [sys.executable, "-m", "eval.decomposer.calibrate", "--adapter", str(adapter), "--model", str(tiny_model_dir)]
    cmd += ["--data", str(built_default[0] / "validation.jsonl"), "--target-precision", "0.6"]
    for _ in range(2):  # a rerun replaces the card's section, it does not add a second one
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((adapter / CALIBRATION_FILE).read_text())
    assert 0.0 <= meta["threshold"] <= 1.0 and meta["target_precision"] == 0.6 and meta["examples"] == 132
    assert (adapter / "pr_curve.png").is_file() and "by language" in (adapter / "calibration.md").read_text()
    card = (adapter / "README.md").read_text()
    assert card.count("<!-- decision-gate -->") == 1 and "## Decision gate" in card
    assert HFDecomposer(model=str(tiny_model_dir), adapter=str(adapter)).threshold == meta["threshold"]
    bad = subprocess.run(cmd[:-2] + ["--target-precision", "1.5"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "--target-precision must be in" in bad.stderr
