"""The gate's calibration formulas on hand-computed rows, and the calibration file."""

from __future__ import annotations

import json
import math

import pytest

from models.decomposer.calibration import (
    CALIBRATION_FILE,
    average_precision,
    choose_threshold,
    point,
    pr_curve,
    read_calibration,
    two_way_probability,
    write_calibration,
)

# 6 prompts: 3 positive. Sorted by probability: 0.9 (+), 0.8 (-), 0.7 (+), 0.4 (+), 0.3 (-), 0.1 (-)
LABELS = [True, False, True, True, False, False]
PROBS = [0.9, 0.8, 0.7, 0.4, 0.3, 0.1]


def test_point_by_hand():
    op = point(LABELS, PROBS, 0.7)  # splits 0.9, 0.8, 0.7: 2 true of 3
    assert op.predicted == 3
    assert op.precision == pytest.approx(2 / 3)
    assert op.recall == pytest.approx(2 / 3)
    assert op.f1 == pytest.approx(2 / 3)
    nothing = point(LABELS, PROBS, 0.95)
    assert (nothing.predicted, nothing.precision, nothing.recall, nothing.f1) == (0, 1.0, 0.0, 0.0)


def test_pr_curve_and_average_precision_by_hand():
    curve = pr_curve(LABELS, PROBS)
    assert [op.threshold for op in curve] == sorted(PROBS, reverse=True)
    assert [round(op.precision, 4) for op in curve] == [1.0, 0.5, 0.6667, 0.75, 0.6, 0.5]
    # recall steps at 0.9 (1/3, p=1), 0.7 (2/3, p=2/3), 0.4 (3/3, p=3/4)
    assert average_precision(LABELS, PROBS) == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)


def test_choose_threshold_for_a_target_precision():
    chosen, met = choose_threshold(LABELS, PROBS, 0.75)
    assert met and chosen.threshold == 0.4 and chosen.recall == 1.0  # 3 of 4 splits right
    chosen, met = choose_threshold(LABELS, PROBS, 0.95)
    assert met and chosen.threshold == 0.9 and chosen.recall == pytest.approx(1 / 3)
    # unreachable: the most precise point that splits something, said so
    chosen, met = choose_threshold([False, True], [0.9, 0.2], 0.95)
    assert not met and chosen.threshold == 0.2 and chosen.precision == 0.5


def test_precision_at_a_traffic_prior_by_hand():
    # at 0.7: TPR 2/3, FPR 1/3. At the set's own prior (1/2) this is the empirical precision.
    assert point(LABELS, PROBS, 0.7, prior=0.5).precision == pytest.approx(point(LABELS, PROBS, 0.7).precision)
    # one prompt in ten parallelizable: 0.1 * 2/3 / (0.1 * 2/3 + 0.9 * 1/3) = 2/11
    op = point(LABELS, PROBS, 0.7, prior=0.1)
    assert op.precision == pytest.approx(2 / 11) and op.recall == pytest.approx(2 / 3) and op.predicted == 3
    assert point(LABELS, PROBS, 0.9, prior=0.1).precision == 1.0  # no false positive: any prior
    # the 0.75 target met at the set's prior (threshold 0.4) is not met at 0.1; only 0.9 has no false split
    chosen, met = choose_threshold(LABELS, PROBS, 0.75, prior=0.1)
    assert met and chosen.threshold == 0.9
    assert average_precision(LABELS, PROBS, prior=0.1) < average_precision(LABELS, PROBS)


def test_two_way_probability():
    assert two_way_probability(math.log(0.3), math.log(0.1)) == pytest.approx(0.75)
    assert two_way_probability(-1000.0, 0.0) == pytest.approx(0.0)  # no overflow


def test_calibration_file_round_trip_and_errors(tmp_path):
    chosen, met = choose_threshold(LABELS, PROBS, 0.95)
    write_calibration(tmp_path, chosen, met, target_precision=0.95, split="validation", examples=6)
    meta = read_calibration(tmp_path)
    assert meta["threshold"] == 0.9 and meta["target_met"] is True and meta["examples"] == 6
    assert read_calibration(tmp_path / "missing") is None and read_calibration(None) is None
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps({"threshold": 1.5}))
    with pytest.raises(ValueError, match="threshold must be a number in"):
        read_calibration(tmp_path)
