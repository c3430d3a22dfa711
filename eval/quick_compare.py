"""First measurement of base model vs LoRA adapter on the validation split:
fraction of valid JSON, of schema-valid decompositions, and parallelizable accuracy.
(The full evaluation is `eval.decomposition` / `eval.e2e`, in later work.)

    python -m eval.quick_compare --model qwen2.5-coder-0.5b-instruct \
        --adapter outputs/adapters/qwen2.5-coder-0.5b-lora-cpu \
        --gold outputs/data/default/validation.jsonl --limit 40 --out outputs/eval/quick

Predictions are appended per batch to `<out>/<system>.predictions.jsonl`; a rerun
resumes where it stopped. Writes `<out>/quick_compare.json` and `.md`.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from data_prep.schema import Record
from eval.e2e import load_split


def load_gold(path: str, limit: int | None, seed: int) -> list[Record]:
    records = load_split(path)
    if limit is not None and limit < len(records):  # a fixed random subset, balanced like the split itself
        records = random.Random(seed).sample(records, limit)
    return records


def run_system(
    name: str,
    model: str,
    adapter: str | None,
    gold: list[Record],
    out: Path,
    batch_size: int,
    max_new_tokens: int,
    constrained: bool = False,
) -> list[dict]:
    pred_path = out / f"{name}.predictions.jsonl"
    done = {}
    if pred_path.exists():
        for line in pred_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                done[row["id"]] = row
    todo = [g for g in gold if g.id not in done]
    if todo:
        from tqdm.auto import tqdm

        from models.decomposer import HFDecomposer

        decomposer = HFDecomposer(model=model, adapter=adapter, max_new_tokens=max_new_tokens, constrained=constrained)
        with open(pred_path, "a", encoding="utf-8") as f, tqdm(total=len(todo), desc=name, unit="prompt") as bar:
            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                for g, d in zip(
                    chunk,
                    decomposer.decompose([g.prompt for g in chunk], [g.id for g in chunk], batch_size),
                    strict=True,
                ):
                    row = {
                        "id": g.id,
                        "valid_json": d.valid_json,
                        "schema_valid": d.fallback_reason is None,
                        "fallback_reason": d.fallback_reason,
                        "pred_parallelizable": d.record.parallelizable,
                        "pred_category": d.record.category,
                        "raw": d.raw,
                        "tokens": d.generated_tokens,
                        "seconds": d.seconds,
                    }
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
                    done[g.id] = row
                f.flush()
                bar.update(len(chunk))
    return [done[g.id] for g in gold]


def score(gold: list[Record], preds: list[dict]) -> dict:
    n = len(gold)
    tp = sum(g.parallelizable and p["pred_parallelizable"] for g, p in zip(gold, preds, strict=True))
    fp = sum((not g.parallelizable) and p["pred_parallelizable"] for g, p in zip(gold, preds, strict=True))
    fn = sum(g.parallelizable and not p["pred_parallelizable"] for g, p in zip(gold, preds, strict=True))
    correct = sum(g.parallelizable == p["pred_parallelizable"] for g, p in zip(gold, preds, strict=True))
    cat_ok = sum(
        g.parallelizable and p["pred_parallelizable"] and g.category == p["pred_category"]
        for g, p in zip(gold, preds, strict=True)
    )
    return {
        "prompts": n,
        "valid_json": sum(p["valid_json"] for p in preds) / n,
        "schema_valid": sum(p["schema_valid"] for p in preds) / n,
        "parallelizable_accuracy": correct / n,
        "parallelizable_precision": tp / (tp + fp) if tp + fp else 0.0,
        "parallelizable_recall": tp / (tp + fn) if tp + fn else 0.0,
        "category_accuracy_on_true_positives": cat_ok / tp if tp else 0.0,
        "mean_generated_tokens": sum(p["tokens"] for p in preds) / n,
        "seconds_per_prompt": sum(p["seconds"] for p in preds) / n,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--adapter", required=True)
    parser.add_argument("--gold", default="outputs/data/default/validation.jsonl")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=384)
    parser.add_argument("--out", default="outputs/eval/quick")
    parser.add_argument("--constrained", action="store_true", help="grammar-constrained decoding (llguidance)")
    args = parser.parse_args(argv)
    for path, what in ((args.gold, "gold file"), (Path(args.adapter) / "adapter_config.json", "adapter")):
        if not Path(path).exists():
            print(f"error: {what} not found: {path}", file=sys.stderr)
            return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gold = load_gold(args.gold, args.limit, args.seed)
    results = {}
    for name, adapter in (("base", None), ("adapter", args.adapter)):
        preds = run_system(name, args.model, adapter, gold, out, args.batch_size, args.max_new_tokens, args.constrained)
        results[name] = score(gold, preds)
    report = {
        "model": args.model,
        "adapter": args.adapter,
        "gold": args.gold,
        "limit": args.limit,
        "seed": args.seed,
        "unconstrained_greedy": True,
        "results": results,
    }
    (out / "quick_compare.json").write_text(json.dumps(report, indent=2) + "\n")
    metrics = list(results["base"])
    lines = ["| metric | base | adapter |", "|---|---:|---:|"]
    for m in metrics:
        b, a = results["base"][m], results["adapter"][m]
        lines.append(f"| {m} | {b:.3f} | {a:.3f} |" if isinstance(b, float) else f"| {m} | {b} | {a} |")
    (out / "quick_compare.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
