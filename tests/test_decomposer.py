"""The decomposer (transformers backend): constrained decoding cannot produce invalid output
(random-weight and untrained models on real prompts), every output becomes a valid record
(serial fallback with a reason), bad prompts and adapters give clear errors, the CLI's file
mode resumes without loss or duplicates; the quick base-vs-adapter comparison scores and resumes."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from conftest import ROOT

from data_prep.formatting import FORMAT_FILE, FORMATS, adapter_format, parse_completion
from data_prep.schema import check_record, errors, output_json_schema
from models.decomposer import DecomposerError, PromptError, check_prompt, load_decomposer, to_record
from models.decomposer.hf_backend import HFDecomposer

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
    decomposer = HFDecomposer(model=str(tiny_model_dir), max_new_tokens=24, gate=False)
    prompts = [PROMPT, "hi", "Give me 5 slogans for a bakery called Crumb, each under 6 words."]
    results = decomposer.decompose(prompts, ["a", "b", "c"], batch_size=2)
    assert [r.record.id for r in results] == ["a", "b", "c"]
    for prompt, r in zip(prompts, results, strict=True):
        assert r.record.prompt == prompt and errors(check_record(r.record)) == []
        assert 1 <= r.generated_tokens <= 24
        # a fallback always yields the serial record; a split never comes with a fallback reason
        if r.fallback_reason is not None:
            assert isinstance(r.fallback_reason, str) and r.fallback_reason and not r.record.parallelizable
        if r.record.parallelizable:
            assert r.fallback_reason is None


# Rules JSON Schema cannot express: checked after decoding (context / items found in the prompt).
AFTER_DECODING = {"rule6.context_verbatim", "rule7.item_verbatim"}
SMALL_SCHEMA = {"max_chars": 24, "max_items": 4, "max_n": 99}
# worst case of that schema: 6 strings of 24 characters, each character a 6-character \u escape
# of one token, plus the structure; the budget lets every output end
SMALL_BUDGET = 6 * 24 * 6 + 120


@pytest.mark.parametrize("arch", ["tiny_model_dir", "tiny_llama_dir"])
def test_random_weight_models_only_produce_schema_valid_json(arch, request, labelled_rows):
    """Constrained decoding cannot produce invalid output: on many real prompts, every output
    of a random-weight model parses and breaks no rule the grammar can express."""
    model_dir = request.getfixturevalue(arch)
    rows = labelled_rows[:: max(1, len(labelled_rows) // 48)][:48]
    constrained = HFDecomposer(
        model=str(model_dir), schema=output_json_schema(**SMALL_SCHEMA), max_new_tokens=SMALL_BUDGET, gate=False
    )
    results = constrained.decompose([r["prompt"] for r in rows], [r["id"] for r in rows], batch_size=16)
    for row, r in zip(rows, results, strict=True):
        assert r.valid_json, (row["id"], r.raw)
        fields = parse_completion(r.raw, row["prompt"])  # parses, with the anchors resolved
        broken = {v.rule for v in errors(check_record({**row, **fields}))}
        assert broken <= AFTER_DECODING, (row["id"], broken, r.raw)
        assert errors(check_record(r.record)) == []  # what the executor gets is always valid
        assert r.fallback_reason is None or set(re.findall(r"\[(\S+)\]", r.fallback_reason)) <= AFTER_DECODING


def test_without_the_grammar_a_random_model_writes_invalid_json(tiny_model_dir, labelled_rows):
    rows = labelled_rows[:8]
    free = HFDecomposer(model=str(tiny_model_dir), constrained=False, max_new_tokens=48, gate=False)
    results = free.decompose([r["prompt"] for r in rows], batch_size=8)
    assert sum(r.valid_json for r in results) < len(rows)
    assert all(errors(check_record(r.record)) == [] for r in results)  # still a serial record each


@pytest.mark.real_model
def test_untrained_base_model_only_produces_schema_valid_json(labelled_rows):
    from models.weights.fetch import fetch_model

    fetch_model("qwen2.5-coder-0.5b-instruct")
    rows = [r for r in labelled_rows if r["parallelizable"]][:4] + [
        r for r in labelled_rows if not r["parallelizable"]
    ][:2]
    base = HFDecomposer(
        model="qwen2.5-coder-0.5b-instruct",
        schema=output_json_schema(**SMALL_SCHEMA),
        max_new_tokens=SMALL_BUDGET,
        gate=False,
    )
    results = base.decompose([r["prompt"] for r in rows], [r["id"] for r in rows], batch_size=6)
    for row, r in zip(rows, results, strict=True):
        fields = parse_completion(r.raw, row["prompt"])
        assert {v.rule for v in errors(check_record({**row, **fields}))} <= AFTER_DECODING, r.raw
        assert errors(check_record(r.record)) == []


@pytest.mark.parametrize(
    "prompt, message",
    [
        ("", "empty"),
        ("  \n\t", "empty"),
        ("abc\x00def", "binary"),
        ("\x01\x02\x03\x04 some text", "binary"),
        (b"caf\xe9 au lait", "not valid UTF-8"),
        ("bad \udce9 surrogate", "not valid UTF-8"),
        (42, "must be a string"),
    ],
)
def test_bad_prompts_give_clear_errors(prompt, message):
    with pytest.raises(PromptError, match=message):
        check_prompt(prompt)


def test_overlong_prompt_and_missing_adapter_give_clear_errors(tiny_model_dir, tmp_path):
    decomposer = HFDecomposer(model=str(tiny_model_dir), max_new_tokens=16, max_model_len=256)
    with pytest.raises(PromptError, match="too long"):
        decomposer.decompose(["word " * 400])
    with pytest.raises(DecomposerError, match="not a LoRA adapter folder"):
        HFDecomposer(model=str(tiny_model_dir), adapter=str(tmp_path))
    with pytest.raises(DecomposerError, match="unknown backend"):
        load_decomposer("tgi")


def test_adapter_format_selects_the_system_prompt(trained, tiny_model_dir):
    adapter = trained[0] / "out"
    assert (adapter / FORMAT_FILE).is_file()  # written by train/sft.py from the data's system prompt
    decomposer = HFDecomposer(model=str(tiny_model_dir), adapter=str(adapter), max_new_tokens=8)
    assert decomposer.fmt == adapter_format(adapter) == "anchor-v2"
    assert decomposer.messages("x")[0]["content"] == FORMATS["anchor-v2"].system_prompt


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "models.decomposer.batch", *args], capture_output=True, text=True, cwd=ROOT
    )


def test_cli_errors(tmp_path):
    proc = _cli("--prompt", "  ")
    assert proc.returncode == 2 and "empty" in proc.stderr
    proc = _cli("--prompt", "x", "--adapter", str(tmp_path))
    assert proc.returncode == 2 and "not a LoRA adapter folder" in proc.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(
        b'{"id": "a", "prompt": "fine"}\n'
        b'{"id": "b", "prompt": "caf\xe9"}\n'
        b"not json\n"
        b'{"id": "c", "prompt": ""}\n'
        b'{"id": "a", "prompt": "again"}\n'
        b'{"id": "d", "text": "no prompt key"}\n'
    )
    proc = _cli("--input", str(bad), "--output", str(tmp_path / "out.jsonl"))
    assert proc.returncode == 2 and "5 bad input line(s)" in proc.stderr, proc.stderr
    for lineno, reason in [(2, "UTF-8"), (3, "not valid JSON"), (4, "empty"), (5, "duplicate id"), (6, '"prompt" key')]:
        assert f"bad.jsonl:{lineno}: " in proc.stderr and reason in proc.stderr
    assert not (tmp_path / "out.jsonl").exists()  # nothing decoded


def test_cli_file_mode_writes_schema_records_and_resumes(tmp_path, tiny_model_dir, labelled_rows):
    rows = labelled_rows[:5]
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": r["id"], "prompt": r["prompt"], "extra": 1}) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    args = ("--model", str(tiny_model_dir), "--input", str(inp), "--output", str(out), "--batch-size", "2")
    args += ("--max-new-tokens", "16")
    proc = _cli(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    first = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in first] == [r["id"] for r in rows]
    assert [r["prompt"] for r in first] == [r["prompt"] for r in rows]
    assert all(errors(check_record(r)) == [] for r in first)
    # a crash after two records and half a third: the rerun cuts the torn line, decodes the rest once
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:2]) + lines[2][:20])
    proc = _cli(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = [json.loads(x) for x in out.read_text().splitlines()]
    assert again == first  # greedy: the same records, none lost or duplicated
    assert '"already_done": 2' in proc.stderr


def test_openai_backend_without_a_server_is_a_clear_error():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once the socket is closed
    with pytest.raises(DecomposerError, match="no server answers"):
        load_decomposer("openai", base_url=f"http://127.0.0.1:{port}/v1")


def test_merged_adapter_decomposes_like_the_adapter(trained, tiny_model_dir, tmp_path):
    import shutil

    from models.decomposer.calibration import point as operating_point
    from models.decomposer.calibration import write_calibration
    from models.decomposer.merge import MERGED_FILE, merge
    from models.decomposer.merge import main as merge_main

    adapter = tmp_path / "adapter"
    shutil.copytree(trained[0] / "out", adapter, ignore=shutil.ignore_patterns("checkpoint-*"))
    write_calibration(
        adapter, operating_point([True], [0.4], 0.37), True, target_precision=0.9, split="validation", examples=1
    )
    out = merge(adapter, tmp_path / "merged", model=str(tiny_model_dir))
    assert (out / MERGED_FILE).is_file() and (out / FORMAT_FILE).is_file()
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert merge(adapter, out, model=str(tiny_model_dir)) == out  # the same adapter: kept as it is
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp
    write_calibration(  # recalibrated after the merge: the merged folder follows, the weights stay
        adapter, operating_point([True], [0.4], 0.2), True, target_precision=0.9, split="validation", examples=1
    )
    merge(adapter, out, model=str(tiny_model_dir))
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp
    assert HFDecomposer(model=str(out), max_new_tokens=24).threshold == 0.2
    write_calibration(
        adapter, operating_point([True], [0.4], 0.37), True, target_precision=0.9, split="validation", examples=1
    )
    merge(adapter, out, model=str(tiny_model_dir))

    prompts = [PROMPT, "Write one haiku about rain.", "Summarise: the meeting moved to Tuesday."]
    lora = HFDecomposer(model=str(tiny_model_dir), adapter=str(adapter), max_new_tokens=24)
    merged = HFDecomposer(model=str(out), max_new_tokens=24)
    assert merged.fmt == lora.fmt == "anchor-v2" and merged.threshold == lora.threshold == 0.37
    assert merged.decision_probs(prompts) == pytest.approx(lora.decision_probs(prompts), abs=1e-4)
    for a, b in zip(lora.decompose(prompts), merged.decompose(prompts), strict=True):
        assert a.raw == b.raw and a.record == b.record

    assert merge_main(["--adapter", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
