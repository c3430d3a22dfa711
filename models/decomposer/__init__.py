"""The decomposer: a chat prompt in, a schema record (`data_prep.schema.Record`) out.

    from models.decomposer import load_decomposer
    decomposer = load_decomposer("vllm", adapter="artifacts/adapters/...")
    [decomposition] = decomposer.decompose(["Translate into French: 1. cat 2. dog"])

`base` is the interface (and imports no backend); each backend is one module, found by
name in `BACKENDS` and imported only when asked for. `grammar` turns the JSON Schema into
the llguidance constraint of the hf backend, `calibration` holds the gate's threshold
maths, and `batch` is the file-to-file CLI (`python -m models.decomposer.batch`).
"""

from __future__ import annotations

import importlib
from typing import Any

from models.decomposer.base import (
    Decomposer,
    DecomposerError,
    Decomposition,
    PromptError,
    check_prompt,
    serial_record,
    to_record,
)

# name -> (module, class, options the backend does not take)
BACKENDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "hf": ("models.decomposer.hf_backend", "HFDecomposer", ()),
    "vllm": ("models.decomposer.vllm_backend", "VLLMDecomposer", ()),
    "openai": ("models.decomposer.openai_backend", "OpenAIDecomposer", ()),
    "rules": ("models.decomposer.rule_backend", "RuleDecomposer", ("model", "adapter", "max_model_len")),
}


def backend_class(backend: str) -> type[Decomposer]:
    try:
        module, name, _ = BACKENDS[backend]
    except KeyError:
        raise DecomposerError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}") from None
    return getattr(importlib.import_module(module), name)


def load_decomposer(backend: str, **kwargs: Any) -> Decomposer:
    """A decomposer for `backend` (hf, vllm, openai, rules) with the backend's own options."""
    cls = backend_class(backend)
    ignored = BACKENDS[backend][2]
    return cls(**{k: v for k, v in kwargs.items() if k not in ignored})


__all__ = [
    "BACKENDS",
    "Decomposer",
    "DecomposerError",
    "Decomposition",
    "PromptError",
    "backend_class",
    "check_prompt",
    "load_decomposer",
    "serial_record",
    "to_record",
]
