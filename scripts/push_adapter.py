"""Push a trained adapter folder (with its model card) to the Hugging Face Hub.

    python scripts/push_adapter.py --adapter outputs/adapters/qwen2.5-coder-0.5b-lora-cpu \
        --repo-id your-org/decomposer-qwen2.5-coder-0.5b-lora [--private]

The token comes from `huggingface-cli login` or $HF_TOKEN. Checkpoints and optimizer
states are not uploaded.
"""

from __future__ import annotations

import argparse
import sys

from train.hub import PushError, push_adapter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", required=True, help="folder written by train/sft.py")
    parser.add_argument("--repo-id", required=True, help="owner/name on the Hub")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--token", default=None)
    args = parser.parse_args(argv)
    try:
        url = push_adapter(args.adapter, args.repo_id, private=args.private, token=args.token)
    except PushError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # network, auth: the Hub's own message, on one line
        print(f"error: push to {args.repo_id} failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
