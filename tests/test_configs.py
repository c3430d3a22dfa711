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
