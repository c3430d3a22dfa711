"""Decompose a prompt with the decomposer (transformers backend).

    python -m models.decompose --model qwen2.5-coder-0.5b-instruct \
        --adapter outputs/adapters/qwen2.5-coder-0.5b-lora-cpu --prompt "Give me 3 slogans for a bakery"

Prints the schema record and the sub-prompts the executor would run (or the
reason it falls back to running the prompt serially).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from data_prep.schema import render_subprompts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct", help="registry name, local folder or Hub id")
    parser.add_argument("--adapter", help="LoRA adapter folder (from train/sft.py)")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--max-new-tokens", type=int, default=512)
    args = parser.parse_args(argv)
    if not args.prompt.strip():
        print("error: --prompt is empty", file=sys.stderr)
        return 2
    if args.adapter and not (Path(args.adapter) / "adapter_config.json").is_file():
        print(f"error: {args.adapter} is not a LoRA adapter folder (no adapter_config.json)", file=sys.stderr)
        return 2
    from models.decomposer import HFDecomposer

    result = HFDecomposer(args.model, args.adapter, max_new_tokens=args.max_new_tokens).decompose([args.prompt])[0]
    print(json.dumps(result.record.model_dump(), ensure_ascii=False, indent=2))
    if result.fallback_reason:
        print(f"\nserial fallback: {result.fallback_reason}\nmodel output: {result.raw[:500]}")
    else:
        print("\nsub-prompts:")
        for i, sub in enumerate(render_subprompts(result.record), 1):
            print(f"  [{i}] {sub}")
    print(f"\n{result.generated_tokens} tokens in {result.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
