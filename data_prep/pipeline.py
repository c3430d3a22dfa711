"""The data pipeline: load -> repair -> detect language -> validate -> dedupe ->
split -> format for SFT -> write. `data_prep.build` is its command line."""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from data_prep.config import DataConfig
from data_prep.dedup import find_duplicates
from data_prep.formatting import sft_example
from data_prep.langid import detect_record_language
from data_prep.loaders import load_source
from data_prep.plots import plot_summary
from data_prep.repair import repair
from data_prep.schema import Record, errors, parse_record

SPLITS = ("train", "validation", "test")


@dataclass
class Dropped:
    id: str
    origin: str
    source: str
    stage: str  # load | validate | dedup
    reason: str  # a rule id, "exact_duplicate", ...
    detail: str


@dataclass
class BuildResult:
    splits: dict[str, list[Record]]
    dropped: list[Dropped] = field(default_factory=list)
    repairs: Counter = field(default_factory=Counter)
    warnings: Counter = field(default_factory=Counter)
    loaded: Counter = field(default_factory=Counter)  # by source
    languages_detected: int = 0
    records_repaired: int = 0
    train_only_ids: set[str] = field(default_factory=set)  # from sources marked train_only


def collect(cfg: DataConfig) -> tuple[list[Record], BuildResult]:
    """Load, repair and validate every source: the valid records, and a result that
    holds what was dropped, repaired and warned about (its splits still empty)."""
    records: list[Record] = []
    result = BuildResult(splits={})
    seen_ids: set[str] = set()
    for src in cfg.sources:
        options: dict[str, Any] = {}
        if src.kind == "parallelprompt_hub":
            options = {"split": src.split or "train", "limit": src.limit}
        raws, problems = load_source(src.kind, src.path, **options)
        for p in problems:
            result.dropped.append(Dropped(p.origin, p.origin, src.path, "load", "unreadable", p.reason))
        for raw in tqdm(raws, desc=f"validate {Path(src.path).name}", unit="rec", leave=False):
            fields = raw.fields
            source = str(fields.get("source") or src.kind)
            result.loaded[source] += 1
            notes: list[str] = []
            if src.repair:
                fields, notes = repair(fields, upstream=raw.upstream)
            if fields.get("language") is None and isinstance(fields.get("prompt"), str):
                fields = {**fields, "language": detect_record_language(fields)}
                result.languages_detected += 1
            rec, violations = parse_record(fields)
            errs = errors(violations)
            if rec is None or errs:
                detail = "; ".join(map(str, errs))
                result.dropped.append(Dropped(raw.id, raw.origin, source, "validate", errs[0].rule, detail))
                continue
            if rec.id in seen_ids:
                result.dropped.append(
                    Dropped(rec.id, raw.origin, source, "validate", "duplicate_id", f"id {rec.id!r} already used")
                )
                continue
            seen_ids.add(rec.id)
            if src.train_only:
                result.train_only_ids.add(rec.id)
            result.repairs.update(notes)
            result.records_repaired += bool(notes)
            result.warnings.update(v.rule for v in violations)
            records.append(rec)
    return records, result


def deduplicate(records: list[Record], cfg: DataConfig) -> tuple[list[Record], list[Dropped]]:
    dups = find_duplicates(
        [r.prompt for r in records],
        near_threshold=cfg.dedup.near_threshold,
        num_perm=cfg.dedup.num_perm,
        shingle=cfg.dedup.shingle,
    )
    kept, dropped = [], []
    for i, rec in enumerate(records):
        if i in dups:
            kind, j = dups[i]
            dropped.append(
                Dropped(rec.id, rec.id, rec.source, "dedup", f"{kind}_duplicate", f"duplicate of {records[j].id}")
            )
        else:
            kept.append(rec)
    return kept, dropped


def stratum(rec: Record) -> str:
    return f"{rec.language}/{rec.category if rec.parallelizable else 'negative'}"


def stratified_split(records: list[Record], fractions: dict[str, float], seed: int) -> dict[str, list[Record]]:
    """Stratified by language x category x positive/negative.

    Records are grouped by stratum, shuffled inside it, then dealt out in one pass:
    each goes to the split furthest below its share so far. Every stratum is
    spread in proportion (+-1), and the totals match the fractions, even when
    most strata hold only a handful of records.
    """
    groups: dict[str, list[Record]] = defaultdict(list)
    for rec in records:
        groups[stratum(rec)].append(rec)
    rng = random.Random(seed)
    out: dict[str, list[Record]] = {s: [] for s in fractions}
    dealt = 0
    for key in sorted(groups):
        group = sorted(groups[key], key=lambda r: r.id)
        rng.shuffle(group)
        for rec in group:
            dealt += 1
            split = max(fractions, key=lambda s: fractions[s] * dealt - len(out[s]))
            out[split].append(rec)
    return out


def build(cfg: DataConfig) -> BuildResult:
    records, result = collect(cfg)
    # Train-only records go last, so deduplication keeps the split sources' records and
    # drops any extra record that duplicates (or nearly duplicates) one of them: the
    # leakage check of extra training data against validation and test.
    extra = result.train_only_ids
    records = [r for r in records if r.id not in extra] + [r for r in records if r.id in extra]
    kept, dup_dropped = deduplicate(records, cfg)
    result.dropped.extend(dup_dropped)
    result.splits = stratified_split([r for r in kept if r.id not in extra], cfg.splits.fractions(), cfg.seed)
    result.splits["train"].extend(r for r in kept if r.id in extra)
    return result


def summary(result: BuildResult, cfg: DataConfig) -> dict[str, Any]:
    def table(key) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = defaultdict(dict)
        for split, recs in result.splits.items():
            for value, count in sorted(Counter(key(r) for r in recs).items()):
                counts[value][split] = count
        return dict(sorted(counts.items()))

    return {
        "config": cfg.name,
        "format_version": cfg.completion_format,
        "loaded_by_source": dict(result.loaded),
        "languages_detected": result.languages_detected,
        "split_sizes": {s: len(r) for s, r in result.splits.items()},
        "train_only_records": sum(r.id in result.train_only_ids for r in result.splits.get("train", [])),
        "positives": {s: sum(r.parallelizable for r in recs) for s, recs in result.splits.items()},
        "by_language": table(lambda r: r.language),
        "by_category": table(lambda r: r.category if r.parallelizable else "(not parallelizable)"),
        "by_source": table(lambda r: r.source),
        "dropped_by_reason": dict(Counter(f"{d.stage}: {d.reason}" for d in result.dropped).most_common()),
        "dropped_by_source": dict(Counter(d.source for d in result.dropped).most_common()),
        "records_repaired": result.records_repaired,
        "repairs": dict(result.repairs.most_common()),
        "warnings": dict(result.warnings.most_common()),
    }


def summary_markdown(s: dict[str, Any]) -> str:
    splits = list(s["split_sizes"])
    lines = [f"# Data summary: `{s['config']}`", ""]
    lines += [
        f"Loaded by source: {', '.join(f'{k} {v}' for k, v in s['loaded_by_source'].items())}; "
        f"languages detected for {s['languages_detected']} records without one.",
        "",
    ]

    def md_table(title: str, rows: dict[str, dict[str, int]]) -> None:
        lines.extend(
            [f"## {title}", "", "| | " + " | ".join(splits) + " | total |", "|---|" + "---:|" * (len(splits) + 1)]
        )
        for name, counts in rows.items():
            values = [counts.get(sp, 0) for sp in splits]
            lines.append(f"| {name} | " + " | ".join(map(str, values)) + f" | {sum(values)} |")
        totals = [s["split_sizes"][sp] for sp in splits]
        lines.extend(["| **total** | " + " | ".join(map(str, totals)) + f" | {sum(totals)} |", ""])

    md_table("By language", s["by_language"])
    md_table("By category", s["by_category"])
    md_table("By source", s["by_source"])
    lines.extend(["## Dropped records by reason", "", "| stage: reason | count |", "|---|---:|"])
    lines += [f"| {k} | {v} |" for k, v in s["dropped_by_reason"].items()] or ["| (none) | 0 |"]
    lines.extend(
        [
            "",
            f"## Repairs applied ({s['records_repaired']} kept records repaired)",
            "",
            "| repair | count |",
            "|---|---:|",
        ]
    )
    lines += [f"| {k} | {v} |" for k, v in s["repairs"].items()] or ["| (none) | 0 |"]
    if s["warnings"]:
        lines.extend(["", "## Warnings on kept records", "", "| rule | count |", "|---|---:|"])
        lines += [f"| {k} | {v} |" for k, v in s["warnings"].items()]
    return "\n".join(lines) + "\n"


def write_outputs(result: BuildResult, cfg: DataConfig, output_dir: str | Path) -> dict[str, Any]:
    """Write everything into a temporary folder, then swap it in, so a crash never
    leaves a half-written dataset where a good one was."""
    import datasets

    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        dsd = datasets.DatasetDict(
            {
                split: datasets.Dataset.from_list([sft_example(r, cfg.completion_format) for r in recs])
                for split, recs in result.splits.items()
            }
        )
        dsd.save_to_disk(str(tmp / "sft"))
        for split, recs in result.splits.items():
            with open(tmp / f"{split}.jsonl", "w", encoding="utf-8") as f:
                f.writelines(r.to_json() + "\n" for r in recs)
        with open(tmp / "dropped.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(asdict(d), ensure_ascii=False) + "\n" for d in result.dropped)
        s = summary(result, cfg)
        (tmp / "summary.json").write_text(json.dumps(s, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / "summary.md").write_text(summary_markdown(s), encoding="utf-8")
        plot_summary(s, tmp / "summary.png")
        (tmp / "config.json").write_text(cfg.model_dump_json(indent=2) + "\n", encoding="utf-8")
        old = output_dir.with_name(f".{output_dir.name}.old")
        if old.exists():
            shutil.rmtree(old)
        if output_dir.exists():
            output_dir.rename(old)
        tmp.rename(output_dir)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return s
