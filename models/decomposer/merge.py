"""Merge a decomposer adapter into its base weights: one plain model folder that any
backend serves without LoRA.

    python -m models.decomposer.merge --adapter artifacts/adapters/qwen2.5-coder-0.5b-lora-cpu-anchor-v4 \\
        [--model qwen2.5-coder-0.5b-instruct] [--out outputs/merged/<adapter name>]

The folder holds the merged weights (safetensors, the base's dtype), the tokenizer, and the
adapter's `decomposer_format.json` and `decomposer_calibration.json`, so the format, the
system prompt and the gate's threshold travel with it; `merged_from.json` records the
adapter, its weights' sha256 and the base. Then `model=<folder>` (no adapter) on any
backend, e.g. `--decomposer merged=vllm,model=outputs/merged/<name>`, or `vllm serve <folder>`.

Why: vLLM applies a LoRA adapter as extra kernels on every layer it adapts; on a CPU that
makes the gate's prefill several times dearer than the base's (`python -m
eval.decomposer.traffic --merged ...` measures both side by side). Merged, the gate costs
what the base model's prefill costs, and the outputs are the adapter's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

from data_prep.formatting import FORMAT_FILE, adapter_format
from data_prep.jsonl_io import atomic_write_text
from models.decomposer.base import DecomposerError, check_adapter
from models.decomposer.calibration import CALIBRATION_FILE
from models.weights.registry import DEFAULT_DECOMPOSER

MERGED_FILE = "merged_from.json"
OUT_ROOT = Path("outputs/merged")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def merged_record(out: Path) -> dict | None:
    """`merged_from.json` of a merged folder, or None for any other folder."""
    path = Path(out) / MERGED_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def copy_recorded(adapter: Path, out: Path) -> None:
    """The adapter's output format and gate calibration, next to the merged weights (each
    written atomically; a file the adapter no longer has is removed)."""
    for name in (FORMAT_FILE, CALIBRATION_FILE):
        if (adapter / name).is_file():
            atomic_write_text(out / name, (adapter / name).read_text(encoding="utf-8"))
        else:
            (out / name).unlink(missing_ok=True)


def merge(adapter: str | Path, out: str | Path, model: str = DEFAULT_DECOMPOSER, dtype: str = "float32") -> Path:
    """Write the merged folder (atomically: built next to `out`, then renamed); an `out`
    merged from the same adapter weights is kept as it is."""
    adapter, out = Path(adapter), Path(out)
    check_adapter(str(adapter))
    try:
        adapter_format(adapter)  # refuses an adapter whose recorded prompt is not the code's
    except ValueError as err:
        raise DecomposerError(str(err)) from None
    digest = sha256(adapter / "adapter_model.safetensors")
    done = merged_record(out)
    if done and done.get("adapter_sha256") == digest:
        copy_recorded(adapter, out)  # the weights are the same; a recalibrated threshold still travels
        return out
    from peft import PeftModel

    from models.weights import load_causal_lm, resolve_model

    tokenizer, base = load_causal_lm(model, dtype)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    copy_recorded(adapter, tmp)
    record = {
        "adapter": str(adapter),
        "adapter_sha256": digest,
        "base_model": model,
        "base_model_path": resolve_model(model),
        "dtype": dtype,
    }
    atomic_write_text(tmp / MERGED_FILE, json.dumps(record, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", required=True, help="LoRA adapter folder")
    parser.add_argument("--model", default=DEFAULT_DECOMPOSER, help="its base (registry name, folder or Hub id)")
    parser.add_argument("--out", help="merged folder (default: outputs/merged/<adapter folder name>)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else OUT_ROOT / Path(args.adapter).name
    try:
        path = merge(args.adapter, out, args.model, args.dtype)
    except (DecomposerError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"merged: {path} (serve it as model={path}, no adapter)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
