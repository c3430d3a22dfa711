"""The end-to-end evaluation's shared state, read by its stages (`eval.e2e.run`) and its
report (`eval.e2e.report`): the work folder, the keys of runs and answer pairs, and which
answer a prediction gets."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from data_prep.jsonl_io import read_jsonl_repairing
from data_prep.schema import Record, render_subprompts
from eval.config import E2EConfig
from models.pipeline import runs_in_parallel
from models.pipeline.answer import reassemble


def gold_group(rec: Record) -> str:
    return rec.category or "not_parallelizable"


def run_key(prompts: list[str], sample: bool) -> str:
    return hashlib.sha1(json.dumps([prompts, sample], ensure_ascii=False).encode()).hexdigest()[:16]


def pair_key(*texts: str) -> str:
    return hashlib.sha1(json.dumps(texts, ensure_ascii=False).encode()).hexdigest()[:16]


class Workdir:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def decompositions(self, kind: str, name: str) -> Path:  # kind: quality | latency
        return self.root / kind / f"{name}.jsonl"

    def serial(self, engine: str) -> Path:
        return self.root / "answers" / f"{engine}.serial.jsonl"

    def parallel(self, engine: str) -> Path:
        return self.root / "answers" / f"{engine}.parallel.jsonl"

    @property
    def judge(self) -> Path:
        return self.root / "judge.jsonl"


def rows_by(path: Path, key: str = "id") -> dict[str, dict[str, Any]]:
    return {row[key]: row for row in read_jsonl_repairing(path)}


def runs_parallel(rec: Record, cfg: E2EConfig) -> bool:
    """Split and within the branch limit (beyond it the pipeline runs the prompt serially)."""
    return runs_in_parallel(rec, cfg.answer.max_branches)


def record_key(rec: Record) -> str:
    """The key of a record's parallel run: its sub-prompts, and whether they are sampled."""
    return run_key(render_subprompts(rec), rec.n is not None)


def parallel_run(cfg: E2EConfig, pred: Record, parallel: dict[str, Any]) -> dict[str, Any] | None:
    """The parallel run of a prediction on one answer engine; None when it runs serially (or has not run)."""
    return parallel.get(record_key(pred)) if runs_parallel(pred, cfg) else None


def answer_pair(pred: Record, serial_row: dict[str, Any], run: dict[str, Any] | None) -> tuple[str, str, bool]:
    """(serial answer, the pipeline's answer, whether they are the same text): the pipeline
    answers with the reassembled parallel run, or with the serial answer when not split."""
    s_text = serial_row["texts"][0]
    p_text = reassemble(pred, run["texts"]) if run else s_text
    return s_text, p_text, s_text.strip() == p_text.strip()


def control_pairs(cfg: E2EConfig, subset: list[Record], answers) -> dict[str, tuple[str, str, str]]:
    """The judge's sanity check: each prompt's serial answer against the serial answer of the
    next prompt (an answer to another request), which a reliable judge calls a loss."""
    serial, _ = answers[cfg.judge.answers_from]
    done = [r for r in subset if r.id in serial]
    pairs = {}
    for rec, other in zip(done, done[1:] + done[:1], strict=True):
        if rec.id != other.id:
            s_text, wrong = serial[rec.id]["texts"][0], serial[other.id]["texts"][0]
            pairs["control-" + pair_key(rec.prompt, s_text, wrong)] = (rec.prompt, s_text, wrong)
    return pairs
