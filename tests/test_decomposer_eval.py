"""The decomposer side-by-side evaluation and the traffic-mix bench: option parsing, the
9:1 mix, and the CLI end to end on the regex rules (no model)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT

from data_prep.schema import Record
from eval.decomposer.evaluate import parse_spec
from eval.decomposer.traffic import summarise, traffic_mix


def test_parse_spec():
    assert parse_spec("rules=rules") == ("rules", "rules", {})
    name, backend, options = parse_spec("a=vllm,adapter=x/y,gate=0,threshold=0.8,fmt=json-v2")
    assert (name, backend) == ("a", "vllm")
    assert options == {"adapter": "x/y", "gate": False, "threshold": 0.8, "fmt": "json-v2"}
    for bad in ("novalue", "a=vllm,color=red", "=hf"):
        with pytest.raises(ValueError, match="--decomposer"):
            parse_spec(bad)


def _rec(i: int, pos: bool) -> Record:
    extra = {"category": "translation", "template": "T: {data}", "data": ["a", "b"]} if pos else {}
    return Record(id=f"r{i}", source="t", language="en", prompt=f"p{i} a b", parallelizable=pos, **extra)


def test_traffic_mix_and_overhead_by_hand():
    records = [_rec(i, i % 3 == 0) for i in range(30)]  # 10 positives, 20 negatives
    mix = traffic_mix(records, 9, 1, seed=0)
    assert len(mix) == 10 and sum(r.parallelizable for r in mix) == 1
    assert traffic_mix(records, 9, 1, seed=0) == mix  # seeded
    with pytest.raises(ValueError, match="asked for more"):
        traffic_mix(records, 21, 1, 0)
    rows = {
        "answer": {r.id: {"seconds": 10.0} for r in mix},
        "gated": {r.id: {"seconds": 0.5, "decode_tokens": 0, "split": False} for r in mix},
        "ungated": {r.id: {"seconds": 2.0, "decode_tokens": 27, "split": r.parallelizable} for r in mix},
    }
    s = summarise(mix, rows)
    assert s["gated"]["overhead_vs_serial_answer"] == pytest.approx(0.05)  # 5 s of decomposer / 100 s of answers
    assert s["ungated"]["overhead_vs_serial_answer"] == pytest.approx(0.2)
    assert s["gated"]["negatives"]["decode_tokens_max"] == 0 and s["ungated"]["split_rate"] == 0.1


def test_decomposer_eval_cli_on_the_rules(tmp_path, built_default):
    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "eval.decomposer.evaluate", "--split", str(built_default[0] / "validation.jsonl")]
    proc = subprocess.run(
        cmd + ["--decomposer", "rules=rules", "--out", str(out)], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    overall = result["decomposers"]["rules"]["overall"]
    assert overall["count"] == 132 and overall["schema_valid"] == 1.0
    assert "Parallelizable F1 by language" in (out / "report.md").read_text() and (out / "f1_by_language.png").is_file()
    bad = subprocess.run(cmd + ["--decomposer", "x", "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "expected NAME=BACKEND" in bad.stderr
