"""A bounded load test of the decomposer server: N requests, C in flight, every one a real
constrained decomposition; reports failures and latency percentiles.

    python -m models.serving.server start --adapter A
    python -m models.serving.loadtest --adapter A --requests 64 --concurrency 8 --out artifacts/bench/serve
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from models.decomposer import DecomposerError, to_record
from models.weights.registry import DEFAULT_DECOMPOSER


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def run_load_test(decomposer, prompts: list[str], requests: int = 64, concurrency: int = 8) -> dict[str, Any]:
    """Send `requests` decompositions (prompts cycled), `concurrency` at a time."""
    from tqdm.auto import tqdm

    jobs = [prompts[i % len(prompts)] for i in range(requests)]

    def one(prompt: str) -> tuple[float, Any]:
        start = time.perf_counter()
        gen = decomposer._one(prompt)
        return time.perf_counter() - start, gen

    latencies: list[float] = []
    failures: list[str] = []
    valid = parsed = tokens = cut = 0
    reasons: Counter[str] = Counter()
    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool, tqdm(total=requests, desc="requests") as bar:
        futures = {pool.submit(one, p): p for p in jobs}
        for fut in as_completed(futures):
            bar.update(1)
            try:
                seconds, gen = fut.result()
            except Exception as err:  # a failed request is the measurement, not a crash
                failures.append(f"{type(err).__name__}: {err}")
                continue
            latencies.append(seconds)
            tokens += gen.tokens
            _, is_json, reason = to_record(gen.text, prompt=futures[fut], rid="load", complete=gen.complete)
            parsed += is_json
            valid += reason is None
            cut += not gen.complete
            if reason:
                reasons[reason.split(":")[0][:80]] += 1
    wall = time.perf_counter() - began
    ok = len(latencies)
    return {
        "requests": requests,
        "concurrency": concurrency,
        "failed": len(failures),
        "failures": failures[:10],
        "wall_seconds": round(wall, 2),
        "requests_per_second": round(ok / wall, 3) if wall else None,
        "generated_tokens_per_second": round(tokens / wall, 1) if wall else None,
        "latency_p50_s": round(percentile(latencies, 50), 3) if ok else None,
        "latency_p95_s": round(percentile(latencies, 95), 3) if ok else None,
        "latency_mean_s": round(statistics.fmean(latencies), 3) if ok else None,
        "valid_json_rate": round(parsed / ok, 3) if ok else None,
        "decomposition_used_rate": round(valid / ok, 3) if ok else None,
        "cut_by_token_budget": cut,
        "fallback_reasons": dict(reasons.most_common()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_DECOMPOSER, help="served base model name")
    parser.add_argument(
        "--adapter", help="adapter folder served by models.serving.server (its name is the served model)"
    )
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--input", default="outputs/data/default/validation.jsonl", help="JSONL with prompts")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--out", type=Path, help="folder for load_test.json")
    args = parser.parse_args(argv)
    from models.decomposer.openai_backend import OpenAIDecomposer

    prompts = [json.loads(x)["prompt"] for x in Path(args.input).read_text(encoding="utf-8").splitlines() if x.strip()]
    try:
        decomposer = OpenAIDecomposer(
            model=args.model, adapter=args.adapter, base_url=args.base_url, max_new_tokens=args.max_new_tokens
        )
    except DecomposerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result = {
        "model": decomposer.model,
        "base_url": args.base_url,
        **run_load_test(decomposer, prompts, args.requests, args.concurrency),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "load_test.json").write_text(json.dumps(result, indent=2) + "\n")
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
