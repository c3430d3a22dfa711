#!/usr/bin/env bash
# Set up .venv (idempotent) and run the test suite, offline on CPU.
#   bash scripts/test.sh                 # everything (real-model tests fetch the offline weights once, ~1 min)
#   bash scripts/test.sh -m "not real_model"   # skip the real-weight tests
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest "$@"
