"""Loaders for the three real data formats, each yielding raw schema-shaped dicts.

- `schema_jsonl`: the schema's own JSONL (docs/SCHEMA.md), e.g. data/raw/labeled/.
- `parallelprompt_json`: the upstream ParallelPrompt repository's JSON lists
  (`original`, `serial`, `template`, `context`, `data` | `n`), category from the file name.
- `parallelprompt_hub`: the Hub dataset `forgelab/ParallelPrompt` (or a local parquet
  in its shape) through `datasets`: `data` is a JSON string, `n` a float that is NaN
  when absent, no language column.

Loaders do not validate or repair; they only map fields. Upstream sources come with
`upstream=True` so the pipeline applies the repairs their known defects need, and
`language=None` so it detects the language.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# ParallelPrompt file names / category strings -> schema categories.
UPSTREAM_CATEGORIES = {
    "generate_n": "repeated_generation",
    "repeated_generation": "repeated_generation",
    "reading_comprehension": "reading_comprehension",
    "keyword_extraction": "keyword_extraction",
    "named_entity_recognition": "named_entity_recognition",
    "translation": "translation",
    "language_correction": "language_correction",
    "sentiment_analysis": "sentiment_analysis",
}


class DataFormatError(ValueError):
    """A source that cannot be read at all (missing file, wrong shape)."""


@dataclass
class RawRecord:
    fields: dict[str, Any]
    origin: str  # "file:line" or "hub-id[index]", for reports
    upstream: bool = False
    notes: list[str] = field(default_factory=list)  # repairs applied

    @property
    def id(self) -> str:
        return str(self.fields.get("id") or self.origin)


@dataclass
class LoadProblem:
    origin: str
    reason: str


def normalize_category(name: Any) -> str | None:
    if name is None or (isinstance(name, float) and math.isnan(name)):
        return None
    key = str(name).strip().lower().replace(" ", "_").replace("-", "_")
    return UPSTREAM_CATEGORIES.get(key, "other")


def load_schema_jsonl(path: str | Path) -> tuple[list[RawRecord], list[LoadProblem]]:
    """One schema JSONL file, or a directory of them (`*.jsonl`, in name order)."""
    path = _existing(path)
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not files:
        raise DataFormatError(f"{path}: a folder with no .jsonl files")
    records, problems = [], []
    for file in files:
        with open(file, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                origin = f"{file.name}:{lineno}"
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as err:
                    problems.append(LoadProblem(origin, f"invalid JSON ({err.msg} at column {err.colno})"))
                    continue
                if not isinstance(obj, dict):
                    problems.append(LoadProblem(origin, f"line is a JSON {type(obj).__name__}, not an object"))
                    continue
                records.append(RawRecord(obj, origin))
    return records, problems


def _upstream_fields(item: dict[str, Any], *, category: str | None, source: str, rid: str) -> dict[str, Any]:
    prompt = item.get("serial") or item.get("prompt") or item.get("original")
    data = item.get("data")
    n = item.get("n")
    return {
        "id": rid,
        "source": source,
        "language": None,
        "prompt": prompt,
        "parallelizable": True,
        "category": category,
        "template": item.get("template"),
        "context": item.get("context"),
        "data": data,
        "n": n,
    }


def load_parallelprompt_json(path: str | Path) -> tuple[list[RawRecord], list[LoadProblem]]:
    """One upstream JSON file, or a directory searched recursively for them.

    The category is the file's stem (generate_n -> repeated_generation); the source
    is `parallelprompt-<parent dir>` (lmsys, synthetic).
    """
    path = _existing(path)
    files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
    if not files:
        raise DataFormatError(f"no .json files under {path}")
    records, problems = [], []
    for file in files:
        try:
            items = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise DataFormatError(f"{file}: invalid JSON ({err.msg} at line {err.lineno})") from None
        if not isinstance(items, list):
            raise DataFormatError(f"{file}: expected a JSON list of records, found {type(items).__name__}")
        category = normalize_category(file.stem)
        subset = file.parent.name
        source = f"parallelprompt-{subset}"
        for i, item in enumerate(items):
            origin = f"{subset}/{file.name}[{i}]"
            if not isinstance(item, dict):
                problems.append(LoadProblem(origin, f"item is a JSON {type(item).__name__}, not an object"))
                continue
            rid = f"pp-{subset}-{file.stem}-{i:05d}"
            records.append(
                RawRecord(_upstream_fields(item, category=category, source=source, rid=rid), origin, upstream=True)
            )
    return records, problems


def _hub_value(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def load_parallelprompt_hub(
    path: str, *, split: str = "train", limit: int | None = None, revision: str | None = None
) -> tuple[list[RawRecord], list[LoadProblem]]:
    """The Hub dataset (an id such as `forgelab/ParallelPrompt`) or a local parquet/dir in its shape."""
    import datasets

    local = Path(path)
    if local.exists():
        files = [str(p) for p in sorted(local.rglob("*.parquet"))] if local.is_dir() else [str(local)]
        if not files:
            raise DataFormatError(f"no .parquet files under {local}")
        ds = datasets.load_dataset("parquet", data_files={split: files}, split=split)
        name = local.name
    else:
        try:
            ds = datasets.load_dataset(path, split=split, revision=revision)
        except Exception as err:  # offline, unknown id, no such split: say which
            raise DataFormatError(f"could not load Hub dataset {path!r} (split {split!r}): {err}") from None
        name = path
    missing = {"template", "context", "data", "n"} - set(ds.column_names)
    if missing or not ({"prompt", "serial"} & set(ds.column_names)):
        raise DataFormatError(f"{path}: not in the ParallelPrompt shape (columns {ds.column_names})")
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))

    records, problems = [], []
    for i, row in enumerate(ds):
        origin = f"{name}[{i}]"
        row = {k: _hub_value(v) for k, v in row.items()}
        data = row.get("data")
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except json.JSONDecodeError as err:
                problems.append(LoadProblem(origin, f"data is not a JSON list ({err.msg})"))
                continue
        n = row.get("n")
        if isinstance(n, float) and n.is_integer():
            n = int(n)
        parallel = row.get("parallelizable")
        rid = f"pp-hub-{row.get('source') or 'x'}-{row.get('source_index', i)}"
        fields = _upstream_fields(
            {**row, "data": data, "n": n},
            category=normalize_category(row.get("category")),
            source=f"parallelprompt-{row.get('source') or 'hub'}".lower(),
            rid=rid,
        )
        if parallel is False:
            fields.update(parallelizable=False, category=None, template=None, context=None, data=None, n=None)
        records.append(RawRecord(fields, origin, upstream=True))
    return records, problems


def load_source(kind: str, path: str, **options: Any) -> tuple[list[RawRecord], list[LoadProblem]]:
    loaders = {
        "schema_jsonl": load_schema_jsonl,
        "parallelprompt_json": load_parallelprompt_json,
        "parallelprompt_hub": load_parallelprompt_hub,
    }
    if kind not in loaders:
        raise DataFormatError(f"unknown source kind {kind!r}; expected one of {sorted(loaders)}")
    return loaders[kind](path, **options)


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise DataFormatError(f"data source not found: {path}")
    return path
