#!/usr/bin/env bash
# Set up .venv (idempotent) and run the test suite, offline on CPU.
#   bash scripts/test.sh                 # everything (fetches the two offline models the tests use once, ~1 min)
#   bash scripts/test.sh -m "not real_model"   # skip the real-weight tests (and the fetch)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
case " $* " in
  *"not real_model"*) ;;
  *) .venv/bin/python -m models.weights.fetch qwen2.5-coder-0.5b-instruct smollm2-135m-instruct ;;
esac
exec .venv/bin/python -m pytest "$@"
