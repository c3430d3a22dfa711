"""Decomposition quality: predicted schema records against gold ones, overall and split
by language, category and source, with counts.

    python -m eval.decomposer.metrics --pred P.jsonl --gold G.jsonl --out DIR

Metrics (records joined by id; a missing or schema-invalid prediction counts as serial):
- schema validity of the predictions;
- parallelizable precision / recall / F1 (positive = parallelizable);
- category accuracy on true positives;
- data-item precision / recall / F1, micro over true positives, items matched after
  normalisation (case, whitespace, list markers, edge punctuation), as multisets;
- exact n on true positives whose gold uses n;
- template validity (rule 5) of predicted positives, and chrF similarity to the gold
  template on true positives (the `evaluate` module in eval/metrics/chrf);
- context exact match on true positives where either side has a context.
Writes DIR/metrics.json and DIR/metrics.md.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from data_prep.schema import Record, check_record, errors

CHRF_MODULE = str(Path(__file__).parents[1] / "metrics" / "chrf")  # eval/metrics/chrf: a local evaluate metric
_MARKER = re.compile(r"^\s*(?:\d{1,3}[.)]|[-*•]|[a-z][.)])\s+", re.I)
_EDGE = re.compile(r"^[\s\"'“”«»「」.,;:!?。，、]+|[\s\"'“”«»「」.,;:!?。，、]+$")


def normalize_item(text: str) -> str:
    return " ".join(_EDGE.sub("", _MARKER.sub("", text)).casefold().split())


def _ratio(num: float, den: float) -> float | None:
    return round(num / den, 4) if den else None


def _f1(p: float | None, r: float | None) -> float | None:
    return round(2 * p * r / (p + r), 4) if p and r else (0.0 if p is not None and r is not None else None)


def load_records(path: str | Path) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            if "id" not in row:
                raise ValueError(f"{path}:{lineno}: no id")
            rows[str(row["id"])] = row
    return rows


def pair_stats(pred: dict[str, Any] | None, gold: Record) -> dict[str, Any]:
    """What one prediction contributes to each metric."""
    valid = pred is not None and not errors(check_record(pred))
    p = Record.model_validate(pred) if valid else None
    pred_pos = bool(p and p.parallelizable)
    s: dict[str, Any] = {"valid": valid, "missing": pred is None, "gold_pos": gold.parallelizable, "pred_pos": pred_pos}
    if pred_pos:
        s["template_valid"] = not any(v.rule.startswith("rule5") for v in check_record(p))
    if pred_pos and gold.parallelizable:
        s["category_ok"] = p.category == gold.category
        gold_items = Counter(normalize_item(x) for x in gold.data or [])
        pred_items = Counter(normalize_item(x) for x in p.data or [])
        if gold.data is not None or p.data is not None:
            s["items"] = (sum((gold_items & pred_items).values()), sum(pred_items.values()), sum(gold_items.values()))
        if gold.n is not None:
            s["n_ok"] = p.n == gold.n
        if gold.context is not None or p.context is not None:
            s["context_ok"] = p.context == gold.context
        s["templates"] = (p.template or "", gold.template or "")
    return s


def aggregate(stats: list[dict[str, Any]], chrf=None) -> dict[str, Any]:
    n = len(stats)
    tp = sum(s["gold_pos"] and s["pred_pos"] for s in stats)
    fp = sum(s["pred_pos"] and not s["gold_pos"] for s in stats)
    fn = sum(s["gold_pos"] and not s["pred_pos"] for s in stats)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    items = [s["items"] for s in stats if "items" in s]
    i_tp, i_pred, i_gold = (sum(x[k] for x in items) for k in range(3))
    ip, ir = _ratio(i_tp, i_pred), _ratio(i_tp, i_gold)
    templates = [s["templates"] for s in stats if "templates" in s]
    out = {
        "count": n,
        "gold_positives": sum(s["gold_pos"] for s in stats),
        "missing_predictions": sum(s["missing"] for s in stats),
        "schema_valid": _ratio(sum(s["valid"] for s in stats), n),
        "parallelizable_precision": precision,
        "parallelizable_recall": recall,
        "parallelizable_f1": _f1(precision, recall),
        "parallelizable_accuracy": _ratio(sum(s["gold_pos"] == s["pred_pos"] for s in stats), n),
        "true_positives": tp,
        "category_accuracy": _ratio(sum(s.get("category_ok", False) for s in stats), tp),
        "item_precision": ip,
        "item_recall": ir,
        "item_f1": _f1(ip, ir),
        "exact_n": _ratio(sum(s.get("n_ok", False) for s in stats), sum("n_ok" in s for s in stats)),
        "template_valid": _ratio(
            sum(s.get("template_valid", False) for s in stats), sum("template_valid" in s for s in stats)
        ),
        "context_exact": _ratio(sum(s.get("context_ok", False) for s in stats), sum("context_ok" in s for s in stats)),
        "template_chrf": None,
    }
    if templates and chrf is not None:
        preds, refs = zip(*templates, strict=True)
        out["template_chrf"] = round(chrf.compute(predictions=list(preds), references=list(refs))["score"], 2)
    return out


def evaluate_predictions(
    preds: dict[str, dict[str, Any]], gold: dict[str, dict[str, Any]], with_chrf: bool = True
) -> dict[str, Any]:
    chrf = None
    if with_chrf:
        import evaluate

        chrf = evaluate.load(CHRF_MODULE)
    gold_recs = {k: Record.model_validate(v) for k, v in gold.items()}
    stats = {k: pair_stats(preds.get(k), g) for k, g in gold_recs.items()}
    splits: dict[str, Callable[[Record], str]] = {
        "language": lambda r: r.language,
        "category": lambda r: r.category or "(not parallelizable)",
        "source": lambda r: r.source,
    }
    result: dict[str, Any] = {
        "overall": aggregate(list(stats.values()), chrf),
        "extra_predictions": len(set(preds) - set(gold)),
    }
    for name, key in splits.items():
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for rid, rec in gold_recs.items():
            groups[key(rec)].append(stats[rid])
        result[f"by_{name}"] = {g: aggregate(s, chrf) for g, s in sorted(groups.items())}
    return result


COLUMNS = [
    ("count", "n"),
    ("schema_valid", "valid"),
    ("parallelizable_precision", "par P"),
    ("parallelizable_recall", "par R"),
    ("parallelizable_f1", "par F1"),
    ("category_accuracy", "cat acc"),
    ("item_f1", "item F1"),
    ("exact_n", "exact n"),
    ("template_valid", "tmpl valid"),
    ("template_chrf", "tmpl chrF"),
    ("context_exact", "ctx exact"),
]


def markdown(result: dict[str, Any], title: str = "Decomposition quality") -> str:
    def row(name: str, m: dict[str, Any]) -> str:
        return "| " + " | ".join([name] + ["-" if m[k] is None else f"{m[k]}" for k, _ in COLUMNS]) + " |"

    header = "| group | " + " | ".join(label for _, label in COLUMNS) + " |\n|" + "---|" * (len(COLUMNS) + 1)
    lines = [f"# {title}", "", header, row("overall", result["overall"])]
    for split in ("language", "category", "source"):
        lines += ["", f"## by {split}", "", header] + [row(g, m) for g, m in result[f"by_{split}"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pred", required=True)
    parser.add_argument("--gold", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--only-predicted", action="store_true", help="score only the gold records that have a prediction"
    )
    args = parser.parse_args(argv)
    try:
        preds, gold = load_records(args.pred), load_records(args.gold)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.only_predicted:
        gold = {k: v for k, v in gold.items() if k in preds}
    result = evaluate_predictions(preds, gold)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    (args.out / "metrics.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
