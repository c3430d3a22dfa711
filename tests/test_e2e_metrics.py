"""eval.e2e.metrics on hand-computed rows: the speedup formulas and their aggregation."""

from __future__ import annotations

import math

import pytest

from eval.e2e.metrics import aggregate, geomean, timing


def test_timing_of_a_split_prompt():
    # serial: 10 s for 100 tokens; decomposer 1 s; parallel run: 3 s for 120 tokens
    t = timing(10.0, 100, 1.0, {"seconds": 3.0, "tokens": [40, 40, 40]})
    assert t["pipeline_s"] == 4.0
    assert t["speedup_raw"] == 2.5  # 10 / 4
    assert t["speedup_norm"] == 3.0  # (10 / 100) / (4 / 120)
    assert t["speedup_exec"] == pytest.approx(3.333, abs=1e-3)  # 10 / 3
    assert t["throughput_ratio"] == 4.0  # (120 / 3) / (100 / 10)
    assert t["parallel_tokens"] == 120


def test_timing_of_a_serial_prompt_counts_the_decomposer():
    t = timing(10.0, 100, 2.5, None)
    assert t["pipeline_s"] == 12.5 and t["speedup_raw"] == 0.8 and t["speedup_norm"] == 0.8
    assert t["speedup_exec"] is None and t["throughput_ratio"] is None and t["parallel_s"] is None


def test_geomean_skips_missing_values():
    assert geomean([2.0, 8.0]) == 4.0
    assert geomean([None, 0, 9.0]) == 9.0
    assert geomean([]) is None


def row(split, raw, serial_s, pipeline_s, verdict=None, agree=None, preference=0.0, picks_a=1):
    r = {
        "split": split,
        "speedup_raw": raw,
        "speedup_norm": raw,
        "speedup_exec": raw if split else None,
        "serial_s": serial_s,
        "pipeline_s": pipeline_s,
        "decomposer_s": 1.0,
        "over_branch_limit": False,
        "serial_cut": False,
        "branch_cut": False,
        "verdict": verdict,
        "agree": agree,
    }
    if agree is not None:
        r.update(preference=preference, picks_a=picks_a)
    return r


def test_aggregate_by_hand():
    rows = [
        row(True, 4.0, 8.0, 2.0, "win", True, 0.5, 1),
        row(True, 1.0, 4.0, 4.0, "loss", False, -0.5, 2),
        row(False, 0.25, 1.0, 4.0, "same"),
    ]
    a = aggregate(rows)
    assert (a["prompts"], a["split"]) == (3, 2)
    assert a["speedup_raw"] == 1.0  # (4 * 1 * 0.25) ** (1/3)
    assert a["speedup_raw_split"] == 2.0  # sqrt(4 * 1)
    assert a["speedup_total"] == pytest.approx(13 / 10)
    assert (a["win"], a["loss"], a["same"], a["tie"]) == (1, 1, 1, 0)
    assert a["retention"] == pytest.approx(round(2 / 3, 3))  # win + tie + same over verdicts
    assert a["agreement"] == 0.5 and a["preference"] == 0.0
    assert a["picks_a"] == 0.75  # 3 first-position picks of 4
    assert math.isclose(a["decomposer_s_mean"], 1.0)


def test_aggregate_of_nothing():
    a = aggregate([])
    assert a["prompts"] == 0 and a["speedup_raw"] is None and a["retention"] is None
