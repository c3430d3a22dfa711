"""`python -m data_prep.validate` agrees with SCHEMA.md: counts, one line per broken record, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import LABELLED, ROOT, UPSTREAM


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "data_prep.validate", *map(str, args)], capture_output=True, text=True, cwd=ROOT
    )


def test_labelled_file_passes_with_counts():
    proc = run(LABELLED)
    assert proc.returncode == 0, proc.stdout
    assert "1000 records, 500 positive, 0 broken" in proc.stdout
    assert "en 120" in proc.stdout and "ar 70" in proc.stdout and "translation 70" in proc.stdout


def test_broken_records_are_listed_and_exit_1(tmp_path, labelled_rows):
    rows = [dict(r) for r in labelled_rows[:6]]
    pos = next(r for r in rows if r["parallelizable"] and r["data"])
    pos["template"] = pos["template"].replace("{data}", "")
    neg = next(r for r in rows if not r["parallelizable"])
    neg["n"] = 3
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows) + "{oops\n", encoding="utf-8")
    proc = run(path)
    assert proc.returncode == 1
    broken = [line for line in proc.stdout.splitlines() if "BROKEN" in line]
    assert len(broken) == 3
    assert any(pos["id"] in b and "rule5.data_placeholder" in b for b in broken)
    assert any(neg["id"] in b and "rule2.negative_nulls" in b for b in broken)
    assert any("bad.jsonl:7" in b and "invalid JSON" in b for b in broken)
    assert "7 records" in proc.stdout and "3 broken" in proc.stdout


def test_upstream_json_is_checked_as_it_stands():
    proc = run(UPSTREAM / "lmsys" / "generate_n.json")
    assert proc.returncode == 1
    broken = [line for line in proc.stdout.splitlines() if line.strip().startswith("BROKEN")]
    assert len(broken) == 64 and all("rule5.count_placeholder" in b for b in broken)  # every {n} template


def test_unreadable_file(tmp_path):
    proc = run(tmp_path / "missing.jsonl")
    assert proc.returncode == 1 and "cannot read" in proc.stdout and "Traceback" not in proc.stderr


def test_hub_parquet_is_checked_as_it_stands(hub_parquet):
    proc = run(hub_parquet)
    assert proc.returncode == 1  # the upstream {n} templates break rule 5 until repaired
    assert "12 records, 11 positive" in proc.stdout
    assert "rule5.count_placeholder" in proc.stdout
