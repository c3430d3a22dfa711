"""Training-data selection: source caps and negative balancing."""

from __future__ import annotations

import datasets
import pytest

from data_prep.formatting import DECISION_PREFIX
from train.data import TrainDataError, balance_negatives, cap_sources, parse_source_caps


def _ds(rows):
    return datasets.Dataset.from_list(
        [
            {
                "source": src,
                "parallelizable": pos,
                "prompt": [{"role": "user", "content": f"p{i}"}],
                "completion": [
                    {
                        "role": "assistant",
                        "content": DECISION_PREFIX + ('true,"category":"other"}' if pos else 'false,"n":null}'),
                    }
                ],
            }
            for i, (src, pos) in enumerate(rows)
        ]
    )


def test_source_caps_keep_at_most_n_of_a_source():
    ds = _ds([("a", True)] * 10 + [("b", False)] * 5)
    capped = cap_sources(ds, parse_source_caps("a=3"), seed=0)
    assert capped["source"].count("a") == 3 and capped["source"].count("b") == 5
    assert cap_sources(ds, {}, 0) is ds
    with pytest.raises(TrainDataError, match="not in the split"):
        cap_sources(ds, {"zzz": 1}, 0)
    with pytest.raises(TrainDataError, match="expected SOURCE=N"):
        parse_source_caps("a=three")


def test_balancing_repeats_negatives_up_to_the_fraction():
    ds = _ds([("a", True)] * 6 + [("a", False)] * 2)
    out = balance_negatives(ds, 0.5, seed=0)
    assert sum(out["parallelizable"]) == 6 and len(out) == 12  # 6 negatives: 2 originals + 4 repeats
    assert balance_negatives(ds, None, 0) is ds
    with pytest.raises(TrainDataError, match="in \\(0, 1\\)"):
        balance_negatives(ds, 1.5, 0)
