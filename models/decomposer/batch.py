"""Decompose prompts with the decomposer, on any backend.

    python -m models.decomposer.batch --model qwen2.5-coder-0.5b-instruct \\
        --adapter artifacts/adapters/qwen2.5-coder-0.5b-lora-cpu-anchor-v4 \\
        --backend hf --prompt "Give me 3 slogans for a bakery"

    python -m models.decomposer.batch --backend vllm --adapter A --input prompts.jsonl --output out.jsonl

`--prompt` prints the schema record and the sub-prompts the executor would run (or why it
falls back to running the prompt serially). `--input` reads JSONL lines with a `prompt`
(and optionally an `id`; other keys are ignored) and writes one schema record per line to
`--output` (id and prompt kept), with the decoding details of each (fallback reason, raw
output, tokens, seconds) in `OUT.meta.jsonl`. A rerun skips the ids already written, so an
interrupted run resumes. Every prompt is checked before anything is decoded.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from data_prep.jsonl_io import append_jsonl, done_ids, sidecar
from data_prep.schema import render_subprompts
from models.decomposer import BACKENDS, DecomposerError, PromptError, check_prompt, load_decomposer
from models.weights.registry import DEFAULT_DECOMPOSER

MAX_PROBLEMS_SHOWN = 10


def read_inputs(path: Path) -> list[tuple[str, str]]:
    """(id, prompt) per line; PromptError listing every bad line."""
    if not path.is_file():
        raise PromptError(f"input file not found: {path}")
    items: list[tuple[str, str]] = []
    problems: list[str] = []
    seen: set[str] = set()
    for lineno, raw in enumerate(path.read_bytes().splitlines(), 1):
        where = f"{path}:{lineno}"
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            problems.append(f"{where}: not valid UTF-8 ({err.reason} at byte {err.start})")
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append(f"{where}: not valid JSON ({err.msg})")
            continue
        if not isinstance(obj, dict) or "prompt" not in obj:
            problems.append(f'{where}: expected an object with a "prompt" key')
            continue
        rid = str(obj.get("id", f"line-{lineno}"))
        try:
            prompt = check_prompt(obj["prompt"], f"prompt of id {rid!r}")
        except PromptError as err:
            problems.append(f"{where}: {err}")
            continue
        if rid in seen:
            problems.append(f"{where}: duplicate id {rid!r}")
            continue
        seen.add(rid)
        items.append((rid, prompt))
    if problems:
        more = len(problems) - MAX_PROBLEMS_SHOWN
        shown = problems[:MAX_PROBLEMS_SHOWN] + ([f"... and {more} more"] if more > 0 else [])
        raise PromptError(f"{len(problems)} bad input line(s); nothing was decoded:\n  " + "\n  ".join(shown))
    return items


def run_file(decomposer, items: list[tuple[str, str]], output: Path, batch_size: int) -> dict[str, int]:
    from tqdm.auto import tqdm

    output.parent.mkdir(parents=True, exist_ok=True)
    meta = sidecar(output, "meta")
    finished = done_ids(output)
    todo = [(rid, p) for rid, p in items if rid not in finished]
    counts = {"input": len(items), "already_done": len(items) - len(todo), "parallelizable": 0, "fallbacks": 0}
    with tqdm(total=len(items), initial=counts["already_done"], desc="decompose", unit="prompt") as bar:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            results = decomposer.decompose([p for _, p in chunk], [rid for rid, _ in chunk], batch_size)
            append_jsonl(meta, [{"id": r.record.id, **r.to_json()["decomposer"]} for r in results])
            append_jsonl(output, [r.record.model_dump() for r in results])  # last: it marks the chunk done
            counts["parallelizable"] += sum(r.record.parallelizable for r in results)
            counts["fallbacks"] += sum(r.fallback_reason is not None for r in results)
            bar.update(len(chunk))
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_DECOMPOSER, help="registry name, local folder, Hub id")
    parser.add_argument("--adapter", help="LoRA adapter folder (from train/sft.py)")
    parser.add_argument("--backend", choices=BACKENDS, default="hf")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt")
    source.add_argument("--input", type=Path, help="JSONL with a prompt (and id) per line")
    parser.add_argument("--output", type=Path, help="JSONL of schema records (with --input)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--no-constrain", action="store_true", help="decode without the grammar (for comparison)")
    parser.add_argument(
        "--threshold", type=float, help="split when P(parallelizable) >= this (default: the adapter's calibrated one)"
    )
    parser.add_argument(
        "--no-gate", action="store_true", help="decode the whole output instead of deciding after one prefill"
    )
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="openai backend: server URL")
    parser.add_argument("--concurrency", type=int, default=8, help="openai backend: requests in flight")
    parser.add_argument("--max-model-len", type=int, default=4096, help="hf/vllm: prompt + output token limit")
    args = parser.parse_args(argv)
    if args.input is not None and args.output is None:
        parser.error("--input needs --output")

    options: dict[str, Any] = {
        "model": args.model,
        "adapter": args.adapter,
        "constrained": not args.no_constrain,
        "max_new_tokens": args.max_new_tokens,
    }
    if args.backend != "rules":
        options.update(gate=not args.no_gate, threshold=args.threshold)
    if args.backend == "openai":
        options.update(base_url=args.base_url, concurrency=args.concurrency)
    else:
        options.update(max_model_len=args.max_model_len)
    try:
        items = read_inputs(args.input) if args.input else [("prompt-0", check_prompt(args.prompt, "--prompt"))]
        decomposer = load_decomposer(args.backend, **options)
        if args.input:
            counts = run_file(decomposer, items, args.output, args.batch_size)
            print(json.dumps(counts), file=sys.stderr)
            print(f"wrote {args.output}", file=sys.stderr)
            return 0
        result = decomposer.decompose([items[0][1]], [items[0][0]])[0]
    except (PromptError, DecomposerError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result.record.model_dump(), ensure_ascii=False, indent=2))
    if result.fallback_reason:
        print(f"\nserial fallback: {result.fallback_reason}\nmodel output: {result.raw[:500]}")
    else:
        print("\nsub-prompts:")
        for i, sub in enumerate(render_subprompts(result.record), 1):
            print(f"  [{i}] {sub}")
    gate = f", P(parallelizable) {result.p_parallel:.3f}" if result.p_parallel is not None else ""
    print(f"\n{result.generated_tokens} tokens in {result.seconds:.1f} s ({decomposer.backend} backend{gate})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
