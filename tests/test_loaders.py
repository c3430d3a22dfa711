"""Each loader on the real files, and the Hub format through `datasets` on a local
parquet in the Hub dataset's shape (data as a JSON string, n a float that is NaN)."""

from __future__ import annotations

import json
import math

import pytest
from conftest import HUB_COLUMNS, LABELLED, UPSTREAM

from data_prep.loaders import (
    DataFormatError,
    load_parallelprompt_hub,
    load_parallelprompt_json,
    load_schema_jsonl,
    load_source,
    normalize_category,
)


def test_schema_jsonl_real_file():
    records, problems = load_schema_jsonl(LABELLED)
    assert len(records) == 1000 and problems == []
    assert records[0].fields["id"] == "train-en-0001" and not records[0].upstream


def test_schema_jsonl_reports_bad_lines(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"id": "a"}\nnot json\n[1]\n\n', encoding="utf-8")
    records, problems = load_schema_jsonl(path)
    assert len(records) == 1
    assert [p.origin for p in problems] == ["x.jsonl:2", "x.jsonl:3"]
    assert "invalid JSON" in problems[0].reason and "not an object" in problems[1].reason


def test_parallelprompt_json_real_dir():
    records, problems = load_parallelprompt_json(UPSTREAM)
    assert problems == [] and len(records) == 64 + 55 + 53 + 105 + 106
    by_cat = {}
    for r in records:
        by_cat.setdefault(r.fields["category"], 0)
        by_cat[r.fields["category"]] += 1
        assert r.upstream and r.fields["language"] is None and r.fields["parallelizable"] is True
    assert by_cat == {"repeated_generation": 64, "keyword_extraction": 160, "reading_comprehension": 159}
    gen = next(r for r in records if r.fields["category"] == "repeated_generation")
    assert isinstance(gen.fields["n"], int) and gen.fields["data"] is None
    # the prompt is the `serial` text (names restored, real newlines), not `original`
    raw = json.loads((UPSTREAM / "lmsys" / "generate_n.json").read_text())[0]
    assert gen.fields["prompt"] == raw["serial"] and "\\n" in raw["original"]


def test_missing_and_malformed_sources(tmp_path):
    with pytest.raises(DataFormatError, match="not found"):
        load_schema_jsonl(tmp_path / "nope.jsonl")
    bad = tmp_path / "lmsys" / "generate_n.json"
    bad.parent.mkdir()
    bad.write_text('{"a": 1}')
    with pytest.raises(DataFormatError, match="expected a JSON list"):
        load_parallelprompt_json(bad)
    with pytest.raises(DataFormatError, match="unknown source kind"):
        load_source("csv", str(bad))


def test_hub_format_local_parquet(hub_parquet):
    import pyarrow.parquet as pq

    assert pq.read_schema(hub_parquet).names == HUB_COLUMNS
    records, problems = load_parallelprompt_hub(str(hub_parquet))
    assert problems == [] and len(records) == 12
    gen, rc = records[0].fields, records[5].fields
    assert (
        gen["category"] == "repeated_generation"
        and gen["n"] == 10
        and isinstance(gen["n"], int)
        and gen["data"] is None
    )
    upstream = json.loads((UPSTREAM / "lmsys" / "reading_comprehension.json").read_text())[0]
    assert rc["category"] == "reading_comprehension" and rc["n"] is None
    assert rc["data"] == upstream["data"] and rc["template"] == upstream["template"]
    assert records[10].fields["category"] == "other"  # a novel category
    neg = records[11].fields
    assert neg["parallelizable"] is False and all(neg[k] is None for k in ("category", "template", "data", "n"))
    assert neg["source"] == "parallelprompt-wildchat"
    # a folder of parquet files works the same, and limit cuts
    assert len(load_parallelprompt_hub(str(hub_parquet.parent), limit=3)[0]) == 3


def test_hub_bad_data_json_is_reported(tmp_path):
    import datasets

    row = {c: None for c in HUB_COLUMNS} | {
        "prompt": "p",
        "serial": "p",
        "template": "t {data}",
        "data": "[broken",
        "n": math.nan,
        "parallelizable": True,
        "source_index": 0,
    }
    path = tmp_path / "x.parquet"
    datasets.Dataset.from_list([row]).to_parquet(str(path))
    records, problems = load_parallelprompt_hub(str(path))
    assert records == [] and "not a JSON list" in problems[0].reason


def test_hub_id_offline_gives_clear_error():
    with pytest.raises(DataFormatError, match="could not load Hub dataset 'forgelab/ParallelPrompt'"):
        load_parallelprompt_hub("forgelab/ParallelPrompt")


def test_hub_wrong_shape(tmp_path):
    import datasets

    path = tmp_path / "y.parquet"
    datasets.Dataset.from_list([{"text": "hello"}]).to_parquet(str(path))
    with pytest.raises(DataFormatError, match="not in the ParallelPrompt shape"):
        load_parallelprompt_hub(str(path))


def test_normalize_category():
    assert normalize_category("Named Entity Recognition") == "named_entity_recognition"
    assert normalize_category("generate_n") == "repeated_generation"
    assert normalize_category("Poetry") == "other"
    assert normalize_category(math.nan) is None
