"""Check labelled files against docs/SCHEMA.md.

    python -m data_prep.validate FILE [FILE ...] [--warnings]

Prints per-file counts (records, positives, languages, categories) and one line
per broken record with its id and reason; exits 1 if any record breaks a rule.
Files are schema JSONL; upstream ParallelPrompt JSON lists (.json) and parquet files
in the Hub dataset's shape (.parquet) are checked as they stand, before any repair
(their language is detected).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from data_prep.langid import detect_record_language
from data_prep.loaders import DataFormatError, load_parallelprompt_hub, load_parallelprompt_json, load_schema_jsonl
from data_prep.schema import errors, parse_record


def validate_file(path: Path, show_warnings: bool) -> int:
    """Print the report for one file; return its number of broken records."""
    if path.suffix == ".parquet":
        raws, problems = load_parallelprompt_hub(str(path))
    elif path.suffix == ".json":
        raws, problems = load_parallelprompt_json(path)
    else:
        raws, problems = load_schema_jsonl(path)
    broken = len(problems)
    for p in problems:
        print(f"  BROKEN {p.origin}: {p.reason}")
    languages: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    positives = warned = 0
    for raw in raws:
        if raw.fields.get("language") is None and isinstance(raw.fields.get("prompt"), str):
            raw.fields["language"] = detect_record_language(raw.fields)  # upstream JSON has no language
        rec, violations = parse_record(raw.fields)
        errs = errors(violations)
        if errs:
            broken += 1
            print(f"  BROKEN {raw.id}: " + "; ".join(map(str, errs)))
        warns = [v for v in violations if v.severity == "warning"]
        warned += bool(warns)
        if warns and show_warnings:
            print(f"  warning {raw.id}: " + "; ".join(map(str, warns)))
        languages[str(raw.fields.get("language"))] += 1
        if raw.fields.get("parallelizable") is True:
            positives += 1
            categories[str(raw.fields.get("category"))] += 1
    total = len(raws) + len(problems)
    print(f"{path}: {total} records, {positives} positive, {broken} broken, {warned} with warnings")
    print("  languages:  " + ", ".join(f"{k} {v}" for k, v in languages.most_common()))
    print("  categories: " + ", ".join(f"{k} {v}" for k, v in categories.most_common()))
    return broken


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument(
        "--warnings", action="store_true", help="also list records with warnings (e.g. paraphrased items)"
    )
    args = parser.parse_args(argv)
    broken = 0
    for path in args.files:
        try:
            broken += validate_file(path, args.warnings)
        except (DataFormatError, OSError, UnicodeDecodeError) as err:
            print(f"{path}: cannot read: {err}")
            broken += 1
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
