"""Loading a base model by registry name, local folder or Hub id. Nothing here fetches:
a registry model that is not fetched yet is an error naming the command that fetches it."""

from __future__ import annotations

from pathlib import Path

from models.weights.registry import MANIFEST, REGISTRY, converted_dir


class WeightsMissing(FileNotFoundError):
    """A registry model that has not been fetched into the cache."""


def resolve_model(name_or_path: str, *, cache_dir: str | Path | None = None) -> str:
    """What to pass to `from_pretrained`: a registry name becomes its fetched local folder,
    a local folder stays itself, and anything else is taken for a Hub id (for users who are
    online)."""
    if name_or_path not in REGISTRY:
        return name_or_path
    folder = converted_dir(REGISTRY[name_or_path], cache_dir)
    if not (folder / MANIFEST).is_file():
        cache = f" --cache-dir {cache_dir}" if cache_dir else ""
        raise WeightsMissing(
            f"{name_or_path} is not fetched yet (no {folder / MANIFEST}); "
            f"run: python -m models.weights.fetch {name_or_path}{cache}"
        )
    return str(folder)


def load_causal_lm(name_or_path: str, dtype: str = "float32"):
    """(tokenizer, model in eval mode) for a registry name, a local folder or a Hub id."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).eval()
    return AutoTokenizer.from_pretrained(path), model
