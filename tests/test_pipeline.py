"""The data build on the real default config: outputs, no leakage, stratification,
summary, strict config parsing, atomic writes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest
from conftest import ROOT

from data_prep.config import ConfigError, load_data_config
from data_prep.dedup import find_duplicates, jaccard, normalize_prompt
from data_prep.pipeline import SPLITS, stratified_split, stratum, write_outputs
from data_prep.schema import Record, check_record, errors


def test_outputs_exist_and_load(built_default):
    import datasets

    out, result, summary = built_default
    dsd = datasets.load_from_disk(str(out / "sft"))
    assert list(dsd) == list(SPLITS)
    for split in SPLITS:
        assert len(dsd[split]) == summary["split_sizes"][split] == len(result.splits[split])
        assert {"prompt", "completion", "id", "language", "category", "parallelizable", "record"} <= set(
            dsd[split].column_names
        )
        lines = (out / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        assert len(lines) == len(dsd[split])
    for name in ("summary.md", "summary.json", "summary.png", "dropped.jsonl", "config.json"):
        assert (out / name).is_file()
    row = dsd["train"][0]
    assert row["prompt"][0]["role"] == "system" and row["completion"][0]["role"] == "assistant"


def test_every_kept_record_is_valid(built_default):
    out, _, _ = built_default
    for split in SPLITS:
        for line in (out / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            assert errors(check_record(json.loads(line))) == []


def test_no_prompt_shared_across_splits(built_default):
    _, result, _ = built_default
    seen: dict[str, str] = {}
    ids: set[str] = set()
    for split, recs in result.splits.items():
        for r in recs:
            key = normalize_prompt(r.prompt)
            assert seen.setdefault(key, split) == split, f"{r.id} appears in {seen[key]} and {split}"
            assert r.id not in ids
            ids.add(r.id)
    # and no near-duplicate pair across splits: LSH candidates at a looser threshold, checked exactly
    flat = [(split, r.prompt) for split, recs in result.splits.items() for r in recs]
    near = find_duplicates([p for _, p in flat], near_threshold=0.7)
    for i, (_, j) in near.items():
        if flat[i][0] != flat[j][0]:
            assert jaccard(flat[i][1], flat[j][1]) < 0.85


def test_upstream_breakage_is_repaired_or_reported(built_default):
    out, result, summary = built_default
    upstream_loaded = (
        summary["loaded_by_source"]["parallelprompt-lmsys"] + summary["loaded_by_source"]["parallelprompt-synthetic"]
    )
    dropped = [json.loads(line) for line in (out / "dropped.jsonl").read_text().splitlines()]
    validate_drops = [d for d in dropped if d["stage"] == "validate"]
    assert all(d["source"].startswith("parallelprompt") for d in validate_drops)  # our labelled set is clean
    assert 0.10 < len(validate_drops) / upstream_loaded < 0.25  # docs/DESIGN.md: about 16% break the rules
    gen_kept = sum(1 for recs in result.splits.values() for r in recs if r.id.startswith("pp-lmsys-generate_n"))
    gen_dropped_as_dup = sum(1 for d in dropped if d["id"].startswith("pp-lmsys-generate_n") and d["stage"] == "dedup")
    assert summary["repairs"]["count_template_to_one_output"] == gen_kept + gen_dropped_as_dup > 50
    assert summary["records_repaired"] >= summary["repairs"]["count_template_to_one_output"]
    assert all(d["reason"] and d["detail"] and d["id"] for d in dropped)
    kept = [r for recs in result.splits.values() for r in recs]
    assert not any("{n}" in (r.template or "") for r in kept)
    assert summary["languages_detected"] == upstream_loaded


def test_splits_are_stratified(built_default):
    _, result, summary = built_default
    sizes = summary["split_sizes"]
    extra = summary["train_only_records"]  # claude-authored-v2: train only, by the config
    assert extra > 0 and all(r.source == "claude-authored-v2" for r in result.splits["train"][-extra:])
    total = sum(sizes.values()) - extra
    assert abs((sizes["train"] - extra) / total - 0.8) < 0.01 and abs(sizes["test"] / total - 0.1) < 0.01
    assert not any(r.source == "claude-authored-v2" for s in ("validation", "test") for r in result.splits[s])
    # every language of the labelled set and every category reaches validation and test
    for split in ("validation", "test"):
        langs = {r.language for r in result.splits[split]}
        cats = {r.category for r in result.splits[split] if r.parallelizable}
        assert {"en", "es", "zh", "ja", "ru", "de", "fr", "ko", "ar", "pt"} <= langs
        assert len(cats) == 8
        assert 0.3 < sum(r.parallelizable for r in result.splits[split]) / len(result.splits[split]) < 0.7


def test_train_only_sources_never_reach_validation_or_test_and_lose_their_near_duplicates(tmp_path):
    """The leakage check of extra training data: a train-only record that (nearly)
    duplicates a split source's record is dropped, whichever order the config lists."""
    from data_prep.config import load_data_config
    from data_prep.pipeline import build

    base = [json.loads(line) for line in (ROOT / "data/raw/labeled/claude_multilingual.jsonl").open()][:60]
    (tmp_path / "main.jsonl").write_text("".join(json.dumps(r) + "\n" for r in base))
    extra_dir = tmp_path / "extra"
    extra_dir.mkdir()
    copy = {**base[7], "id": "x-copy", "prompt": base[7]["prompt"] + " "}  # near-identical prompt
    fresh = {**base[8], "id": "x-new", "prompt": "Wie spät ist es gerade in Tokio, und lohnt sich ein Anruf?"}
    fresh.update(parallelizable=False, category=None, template=None, context=None, data=None, n=None, language="de")
    (extra_dir / "de.jsonl").write_text(json.dumps(copy) + "\n" + json.dumps(fresh) + "\n")
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(
        f"name: t\noutput_dir: {tmp_path / 'out'}\nsources:\n"
        f"  - {{kind: schema_jsonl, path: {extra_dir}, train_only: true}}\n"  # listed first on purpose
        f"  - {{kind: schema_jsonl, path: {tmp_path / 'main.jsonl'}}}\n"
    )
    result = build(load_data_config(cfg_path))
    ids = {split: {r.id for r in recs} for split, recs in result.splits.items()}
    assert "x-new" in ids["train"] and "x-copy" not in set().union(*ids.values())
    assert any(d.id == "x-copy" and d.stage == "dedup" for d in result.dropped)
    assert sum(map(len, ids.values())) == 61


def test_stratified_split_deals_each_stratum_in_proportion():
    def rec(i, lang, cat):
        return Record(
            id=f"r{i}",
            source="t",
            language=lang,
            prompt=f"p{i}",
            parallelizable=cat is not None,
            category=cat,
            template="x {data}" if cat else None,
            data=["a", "b"] if cat else None,
        )

    records = [
        rec(i, lang, cat)
        for i, (lang, cat) in enumerate(
            [(lang, cat) for lang in ("en", "ja") for cat in ("translation", None) for _ in range(20)]
        )
    ]
    parts = stratified_split(records, {"train": 0.8, "validation": 0.1, "test": 0.1}, seed=3)
    for key in Counter(stratum(r) for r in records):
        per_split = {s: sum(stratum(r) == key for r in recs) for s, recs in parts.items()}
        assert abs(per_split["train"] - 16) <= 1 and abs(per_split["test"] - 2) <= 1, (key, per_split)
    again = stratified_split(list(reversed(records)), {"train": 0.8, "validation": 0.1, "test": 0.1}, seed=3)
    assert {s: [r.id for r in v] for s, v in parts.items()} == {s: [r.id for r in v] for s, v in again.items()}


def test_summary_markdown_has_the_tables(built_default):
    out, _, _ = built_default
    md = (out / "summary.md").read_text(encoding="utf-8")
    for heading in (
        "## By language",
        "## By category",
        "## By source",
        "## Dropped records by reason",
        "## Repairs applied",
    ):
        assert heading in md


@pytest.mark.parametrize(
    "content, message",
    [
        ("name: x\noutput_dir: o\nsources: []\n", "sources"),
        (
            "name: x\noutput_dir: o\nsources:\n  - {kind: schema_jsonl, path: a}\nsplit: {train: 1}\n",
            "split: Extra inputs",
        ),
        ("name: x\noutput_dir: o\nsources:\n  - {kind: csv, path: a}\n", "sources.0.kind"),
        (
            "name: x\noutput_dir: o\nsources:\n  - {kind: schema_jsonl, path: a}\nsplits: {train: 0.5, validation: 0.1, test: 0.1}\n",
            "sum to 1",
        ),
        ("- just\n- a list\n", "mapping at the top level"),
        ("name: x\noutput_dir: o\nsources:\n  - {kind: schema_jsonl, path: a, limit: 5}\n", "parallelprompt_hub only"),
        ("name: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_configs_give_clear_errors(tmp_path, content, message):
    path = tmp_path / "c.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_data_config(path)


def test_build_cli_bad_input_is_a_clear_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"name: x\noutput_dir: {tmp_path / 'out'}\nsources:\n  - {{kind: schema_jsonl, path: {tmp_path / 'missing.jsonl'}}}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "data_prep.build", "--config", str(cfg)], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 2 and "data source not found" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "data_prep.build", "--config", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 2 and "config file not found" in proc.stderr


def test_failed_write_keeps_the_previous_output(built_default, tmp_path, monkeypatch):
    from data_prep import pipeline

    _, result, _ = built_default
    cfg = load_data_config(ROOT / "configs" / "data" / "default.yaml")
    out = tmp_path / "ds"
    write_outputs(result, cfg, out)
    before = (out / "train.jsonl").read_text()

    def boom(*a, **k):
        raise RuntimeError("crash mid-write")

    monkeypatch.setattr(pipeline, "summary", boom)
    with pytest.raises(RuntimeError):
        write_outputs(result, cfg, out)
    assert (out / "train.jsonl").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temporary folder left behind
