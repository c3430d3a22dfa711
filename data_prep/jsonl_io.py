"""Append-only JSONL that survives crashes: every line flushed and fsynced, a torn last
line (a crash mid-write) cut off before a rerun reads which ids are done."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def append_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl_repairing(path: Path) -> list[dict[str, Any]]:
    """The complete lines of an append-only JSONL; a torn last line is cut off the file."""
    if not path.exists():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data[: data.rfind(b"\n") + 1]
        with open(path, "r+b") as f:
            f.truncate(len(keep))
        data = keep
    return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]


def done_ids(path: Path) -> set[str]:
    return {row["id"] for row in read_jsonl_repairing(path)}


def atomic_write_text(path: Path, text: str) -> None:
    """Write a whole file so that a reader sees the old content or the new, never half."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def sidecar(path: Path, name: str) -> Path:
    """OUT.jsonl -> OUT.<name>.jsonl"""
    return path.with_name(path.name.removesuffix(".jsonl") + f".{name}.jsonl")
