"""Build the decomposer's SFT data set from a data config.

    python -m data_prep.build --config configs/data/default.yaml [--output_dir DIR] [--seed N]

Writes into the output folder (atomically): `sft/` (a `datasets.DatasetDict` with
train / validation / test, conversational prompt/completion columns for TRL),
`{split}.jsonl` (the schema records, the gold labels for evaluation),
`dropped.jsonl` (every dropped record with its reason), `summary.md` / `.json` / `.png`.
"""

from __future__ import annotations

import argparse
import sys

from data_prep.config import ConfigError, load_data_config
from data_prep.loaders import DataFormatError
from data_prep.pipeline import build, summary_markdown, write_outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML data config, e.g. configs/data/default.yaml")
    parser.add_argument("--output_dir", help="override the config's output_dir")
    parser.add_argument("--seed", type=int, help="override the config's split seed")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in {"output_dir": args.output_dir, "seed": args.seed}.items() if v is not None}
    try:
        cfg = load_data_config(args.config, overrides)
        result = build(cfg)
        s = write_outputs(result, cfg, cfg.output_dir)
    except (ConfigError, DataFormatError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary_markdown(s))
    print(f"wrote {cfg.output_dir} (sft/, train|validation|test.jsonl, dropped.jsonl, summary.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
