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


@pytest.fixture
def stop_and_resume(make_cfg, tmp_path, interrupt_at):
    """stop_and_resume(overrides, stop_at) -> (whole, split, checkpoint).

    Trains ``overrides`` uninterrupted into ``tmp_path / "whole"``; trains them again into
    ``tmp_path / "split"``, stopped by SIGTERM once the run reports step ``stop_at`` (an int, or a
    function of the whole run's scalars), checks its checkpoint is at that step and resumes from it.
    Returns both runs' scalars by tag as [(step, value)] (without the wall-clock charts/SPS) and the
    checkpoint the resume started from. torch's thread count is restored afterwards.
    """
    import signal

    import torch

    from rlrun.cli import StoppedBySignal, run_training
    from rlrun.run import latest_checkpoint, read_scalars

    def scalars(run_dir):
        return {t: [(s, v) for s, v, _ in e] for t, e in read_scalars(run_dir).items() if t != "charts/SPS"}

    def run(overrides, stop_at):
        threads = torch.get_num_threads()
        try:
            run_training(make_cfg(*overrides), tmp_path / "whole")
            whole = scalars(tmp_path / "whole")
            step = stop_at(whole) if callable(stop_at) else stop_at
            interrupt_at(step, signal.SIGTERM)
            with pytest.raises(StoppedBySignal):
                run_training(make_cfg(*overrides), tmp_path / "split")
            interrupt_at(None)
            _, ckpt = latest_checkpoint(tmp_path / "split")
            assert ckpt["global_step"] == step
            run_training(make_cfg(*overrides, f"resume={tmp_path / 'split'}"), tmp_path / "split", resume=ckpt)
        finally:
            torch.set_num_threads(threads)
        return whole, scalars(tmp_path / "split"), ckpt

    return run
