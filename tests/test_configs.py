"""Every YAML under configs/ parses (strictly)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT

from data_prep.config import load_data_config

DATA_CONFIGS = sorted((ROOT / "configs" / "data").glob("*.yaml"))


@pytest.mark.parametrize("path", DATA_CONFIGS, ids=lambda p: p.name)
def test_data_config_parses(path: Path):
    cfg = load_data_config(path)
    assert cfg.name == path.stem and cfg.sources


def test_default_config_sources_exist():
    cfg = load_data_config(ROOT / "configs" / "data" / "default.yaml")
    for src in cfg.sources:
        assert (ROOT / src.path).exists(), src.path


SFT_CONFIGS = sorted((ROOT / "configs" / "sft").glob("*.yaml"))
ACCELERATE_CONFIGS = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))


@pytest.mark.parametrize("path", SFT_CONFIGS, ids=lambda p: p.name)
def test_sft_config_parses_with_trl(path: Path):
    import torch

    from train.sft import make_parser

    args = ["--config", str(path)]
    if "gpu" in path.name and not torch.cuda.is_available():
        args += ["--bf16", "false", "--use_cpu", "true"]  # TrainingArguments refuses bf16 without a GPU
    data_args, training_args, model_args = make_parser().parse_args_and_config(args)
    assert model_args.use_peft and not model_args.lora_modules_to_save
    assert training_args.output_dir.startswith("outputs/adapters/")
    assert data_args.dataset_path == "outputs/data/default/sft"
    if path.name.endswith("-cpu.yaml") or "-cpu-" in path.name:
        assert training_args.use_cpu and model_args.dtype == "float32"
    if "qlora" in path.name:
        assert model_args.load_in_4bit


def test_sft_parser_rejects_unknown_keys(tmp_path):
    from train.sft import make_parser

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "model_name_or_path: x\nuse_peft: true\nuse_cpu: true\nlora_rank: 8\noutput_dir: outputs/adapters/x\n"
    )
    with pytest.raises(ValueError, match="lora_rank"):
        make_parser().parse_args_and_config(["--config", str(bad)])


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_config_loads(path: Path):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(path))
    assert cfg.num_processes >= 1 and cfg.distributed_type


EVAL_CONFIGS = sorted((ROOT / "configs" / "eval").glob("*.yaml"))


@pytest.mark.parametrize("path", EVAL_CONFIGS, ids=lambda p: p.name)
def test_eval_config_parses(path: Path):
    from eval.config import load_e2e_config

    cfg = load_e2e_config(path)
    assert cfg.name == path.stem and cfg.decomposers
    for spec in cfg.decomposers:
        assert spec.adapter is None or (ROOT / spec.adapter / "adapter_config.json").is_file(), spec.adapter


GATEWAY_CONFIGS = sorted((ROOT / "configs" / "gateway").glob("*.yaml"))


@pytest.mark.parametrize("path", GATEWAY_CONFIGS, ids=lambda p: p.name)
def test_gateway_config_parses(path: Path):
    from models.gateway.config import load_gateway_config

    cfg = load_gateway_config(path)
    assert cfg.decomposer.base_url and cfg.answer.base_url and cfg.max_branches >= 2
    if path.name == "cpu.yaml":  # the embedded default: one vllm serve, the default adapter, on loopback
        assert cfg.host == "127.0.0.1" and cfg.launch and cfg.decomposer.adapter in cfg.launch[0].adapters


def test_gateway_config_rejects_unknown_keys(tmp_path):
    from data_prep.config import ConfigError
    from models.gateway.config import load_gateway_config

    bad = tmp_path / "gw.yaml"
    bad.write_text("port: 8080\nmax_inflight: 3\n")
    with pytest.raises(ConfigError, match="max_inflight"):
        load_gateway_config(bad)
