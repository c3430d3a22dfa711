"""Shared fixtures. Everything runs offline on CPU (HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT / "data" / "raw"
LABELLED = RAW / "labeled" / "claude_multilingual.jsonl"
UPSTREAM = RAW / "parallelprompt"
HUB_COLUMNS = [
    "source",
    "source_index",
    "prompt",
    "parallelizable",
    "category",
    "is_novel_category",
    "category_description",
    "serial",
    "template",
    "context",
    "data",
    "n",
    "validation_passed",
    "validation_tier",
]


@pytest.fixture(scope="session")
def labelled_rows() -> list[dict]:
    return [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, labelled_rows) -> Path:
    """A random-weight Qwen2 (2 layers, 64 wide, head size 32) with a BPE tokenizer
    trained on our prompts and gold completions, ChatML chat template, eos <|im_end|>."""
    from tiny import build_tiny_model

    from data_prep.formatting import SYSTEM_PROMPT, format_completion
    from data_prep.schema import Record

    records = [Record.model_validate(r) for r in labelled_rows]
    texts = [SYSTEM_PROMPT] + [r.prompt for r in records] + [format_completion(r) for r in records]
    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen2"), texts, architecture="qwen2")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, labelled_rows) -> Path:
    """The same tiny shape in the Llama architecture."""
    from tiny import build_tiny_model

    texts = [r["prompt"] for r in labelled_rows]
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), texts, architecture="llama", seed=1)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def built_default(tmp_path_factory):
    """The default data config built once into a temporary folder."""
    from data_prep.config import load_data_config
    from data_prep.pipeline import build, write_outputs

    out = tmp_path_factory.mktemp("data") / "default"
    cfg = load_data_config(ROOT / "configs" / "data" / "default.yaml", {"output_dir": str(out)})
    cwd = os.getcwd()
    os.chdir(ROOT)  # the config's source paths are relative to the repository root
    try:
        result = build(cfg)
        summary = write_outputs(result, cfg, out)
    finally:
        os.chdir(cwd)
    return out, result, summary


@pytest.fixture(scope="session")
def hub_parquet(tmp_path_factory):
    """A parquet in the Hub dataset's shape, made from real upstream records plus a
    negative row and a novel category."""
    import datasets

    rows = []
    for task, cat in [("generate_n", "Repeated Generation"), ("reading_comprehension", "Reading Comprehension")]:
        for i, item in enumerate(json.loads((UPSTREAM / "lmsys" / f"{task}.json").read_text())[:5]):
            rows.append(
                {
                    "source": "lmsys",
                    "source_index": 1000 * len(rows) + i,
                    "prompt": item["original"],
                    "parallelizable": True,
                    "category": cat,
                    "is_novel_category": False,
                    "category_description": None,
                    "serial": item["serial"],
                    "template": item["template"],
                    "context": item["context"],
                    "data": json.dumps(item["data"]) if "data" in item else None,
                    "n": float(item["n"]) if "n" in item else math.nan,
                    "validation_passed": True,
                    "validation_tier": "high",
                }
            )
    rows.append({**rows[-1], "source_index": 7, "category": "Code Review", "is_novel_category": True})
    rows.append(
        {
            **rows[0],
            "source": "wildchat",
            "source_index": 8,
            "parallelizable": False,
            "category": None,
            "template": None,
            "context": None,
            "data": None,
            "n": math.nan,
        }
    )
    path = tmp_path_factory.mktemp("hub") / "train-00000-of-00001.parquet"
    datasets.Dataset.from_list(rows).to_parquet(str(path))
    return path


# ---------------- training the tiny model (train/sft.py through its real CLI) ----------------
ACCELERATE = [
    sys.executable,
    "-m",
    "accelerate.commands.launch",
    "--config_file",
    str(ROOT / "configs/accelerate/cpu.yaml"),
]


def write_config(path, tiny_model_dir, dataset_path, output_dir, **overrides):
    cfg = {
        "model_name_or_path": str(tiny_model_dir),
        "dtype": "float32",
        "use_peft": True,
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_target_modules": ["q_proj", "v_proj"],
        "dataset_path": str(dataset_path),
        "data_config": None,
        "max_train_samples": 16,
        "max_eval_samples": 4,
        "max_length": 512,
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "learning_rate": 1e-3,
        "logging_steps": 1,
        "eval_strategy": "steps",
        "eval_steps": 2,
        "save_strategy": "steps",
        "save_steps": 1,
        "output_dir": str(output_dir),
        "report_to": "none",
        "use_cpu": True,
        "bf16": False,  # TRL's default turns bf16 autocast on; this CPU has no fast bf16 GEMM
        "seed": 0,
        "max_steps": 2,
    }
    cfg.update(overrides)
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_sft(config, *extra, launcher=ACCELERATE):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE", "WANDB_MODE": "disabled"}
    return subprocess.run(
        [*launcher, str(ROOT / "train/sft.py"), "--config", str(config), *extra],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=900,
    )


def run_sft_directly(config, *extra):
    """Without accelerate, whose launcher adds its own traceback when the script exits non-zero."""
    return run_sft(config, *extra, launcher=[sys.executable])


@pytest.fixture(scope="session")
def trained(tmp_path_factory, tiny_model_dir, built_default):
    dataset = built_default[0] / "sft"
    work = tmp_path_factory.mktemp("sft")
    config = write_config(work / "tiny.yaml", tiny_model_dir, dataset, work / "out", decision_loss_weight=4.0)
    proc = run_sft(config)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "decision token found in 2 of 2 training rows" in proc.stderr  # train/decision_loss.py is in the loop
    return work, config


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "models.serving.server", *args], capture_output=True, text=True, cwd=ROOT, timeout=900
    )


@pytest.fixture(scope="session")
def server(trained, tiny_model_dir):
    """`vllm serve` of the tiny model with the tiny trained adapter, on loopback (needs vLLM)."""
    if __import__("importlib").util.find_spec("vllm") is None:
        pytest.skip("vLLM not installed (setup.sh --no-vllm)")
    adapter = str(trained[0] / "out")
    port = free_port()
    proc = serve_cli(
        "start", "--model", str(tiny_model_dir), "--adapter", adapter, "--port", str(port),
        "--max-model-len", "2048", "--kv-cache-gib", "1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pid = int((ROOT / "outputs/serve" / str(port) / "server.pid").read_text())
    yield port, pid, adapter
    serve_cli("stop", "--port", str(port))
