"""Shared fixtures: compose configs with Hydra's compose API from the installed package."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig


@pytest.fixture
def make_cfg():
    """compose(overrides) -> the composed config, as `rlrun <overrides>` would see it."""

    def _compose(*overrides: str) -> DictConfig:
        with initialize_config_module(version_base="1.3", config_module="rlrun.configs"):
            return compose("config", overrides=list(overrides), return_hydra_config=False)

    return _compose
