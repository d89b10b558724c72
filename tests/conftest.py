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


@pytest.fixture
def interrupt_at(monkeypatch):
    """interrupt_at(step, signum): the next Run behaves as if ``signum`` arrived once it reports ``step``
    to its progress display; call with None to stop interrupting."""
    from rlrun.run import Run

    original = Run.progress

    def arm(step: int | None, signum: int = 15) -> None:
        if step is None:
            monkeypatch.setattr(Run, "progress", original)
            return

        def progress_then_interrupt(self, global_step):
            original(self, global_step)
            if global_step == step:
                self._on_signal(signum, None)

        monkeypatch.setattr(Run, "progress", progress_then_interrupt)

    return arm
