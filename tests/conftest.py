"""Shared fixtures: configs composed with Hydra's compose API from the installed package, the rlrun commands
in a subprocess, stopping a run at a chosen step, and comparing an interrupted run with an uninterrupted one.

Every test run is quiet and single-threaded (TEST_OVERRIDES), set here once: ``make_cfg`` and ``cli`` put
these overrides first, so that a test that needs other values passes them and wins.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from rlrun.core.events import scalar_values

TEST_OVERRIDES = ("logging.progress=none", "torch_threads=1")  # no progress display, one torch thread per test run
COMMANDS = {"rlrun": "rlrun.cli", "rlrun-eval": "rlrun.cli.evaluate", "rlrun-plot": "rlrun.cli.plot"}
CLI_TIMEOUT = 300  # seconds a command may take before the test fails


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """The whole session computes on one torch thread, as every run in it does (TEST_OVERRIDES)."""
    torch.set_num_threads(1)


SMALL_TINY_LM = dict(max_steps=20, n_layer=1, n_embd=32, n_head=2, vocab_size=300)  # built in seconds


@pytest.fixture(autouse=True, scope="session")
def _rlrun_cache(tmp_path_factory):
    """rlrun's cache (RLRUN_CACHE) is a fresh directory of the session, never the user's; ``rlrun-tiny-gpt2`` is
    built there on first use as a 1-block model pretrained for 20 steps (seconds), not the 3-minute default."""
    import functools

    from rlrun.rlhf import tiny_lm

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(tiny_lm.CACHE_ENV, str(tmp_path_factory.mktemp("rlrun_cache")))
        patch.setattr(tiny_lm, "pretrain_tiny_lm", functools.partial(tiny_lm.pretrain_tiny_lm, **SMALL_TINY_LM))
        yield


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """A test that sets another thread count gives the next test the session's back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def make_cfg():
    """compose(overrides) -> the composed config, as `rlrun <overrides>` would see it (after TEST_OVERRIDES)."""

    def _compose(*overrides: str) -> DictConfig:
        with initialize_config_module(version_base="1.3", config_module="rlrun.configs"):
            return compose("config", overrides=[*TEST_OVERRIDES, *overrides], return_hydra_config=False)

    return _compose


def command_line(command: str, *args: str | Path, one_thread: bool = True) -> list[str]:
    """The argv of ``command`` (rlrun, rlrun-eval, rlrun-plot) run with this Python. ``rlrun`` gets TEST_OVERRIDES
    first, unless it only prints a config or help (``one_thread=False`` leaves torch_threads to the command, for
    sweeps that give each job its share of the cores)."""
    args = [str(a) for a in args]
    if command == "rlrun" and not any(a.startswith(("--cfg", "-c", "--help", "--info")) for a in args):
        flags = next((i for i, a in enumerate(args) if not a.startswith("-")), len(args))  # e.g. -m comes first
        args[flags:flags] = [o for o in TEST_OVERRIDES if one_thread or not o.startswith("torch_threads=")]
    return [sys.executable, "-m", COMMANDS[command], *args]


@pytest.fixture(scope="session")
def cli_argv():
    """cli_argv(command, *args, one_thread=True) -> the argv of a command line (see :func:`command_line`)."""
    return command_line


@pytest.fixture(scope="session")
def cli():
    """cli(command, *args, cwd=None, timeout=CLI_TIMEOUT, one_thread=True) -> CompletedProcess of the command."""

    def _run(command: str, *args: str | Path, cwd: Path | None = None, timeout: float = CLI_TIMEOUT,
             one_thread: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(command_line(command, *args, one_thread=one_thread), cwd=cwd, capture_output=True,
                              text=True, timeout=timeout)

    return _run


@pytest.fixture(scope="session")
def rlrun(cli):
    """rlrun(*args, cwd, timeout=CLI_TIMEOUT) -> CompletedProcess of the rlrun command (TEST_OVERRIDES first)."""

    def _run(*args: str | Path, cwd: Path, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
        return cli("rlrun", *args, cwd=cwd, timeout=timeout)

    return _run


@pytest.fixture
def interrupt_at(monkeypatch):
    """interrupt_at(step, signum): the next Run behaves as if ``signum`` arrived once it reports ``step``
    to its progress display; call with None to stop interrupting."""
    from rlrun.core.run import Run

    original = Run.progress

    def arm(step: int | None, signum: int = signal.SIGTERM) -> None:
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
    checkpoint the resume started from.
    """
    from rlrun.cli.train import StoppedBySignal, run_training
    from rlrun.core.checkpoint import latest_checkpoint

    def run(overrides, stop_at):
        run_training(make_cfg(*overrides), tmp_path / "whole")
        whole = scalar_values(tmp_path / "whole")
        step = stop_at(whole) if callable(stop_at) else stop_at
        interrupt_at(step, signal.SIGTERM)
        with pytest.raises(StoppedBySignal):
            run_training(make_cfg(*overrides), tmp_path / "split")
        interrupt_at(None)
        _, ckpt = latest_checkpoint(tmp_path / "split")
        assert ckpt["global_step"] == step
        run_training(make_cfg(*overrides, f"resume={tmp_path / 'split'}"), tmp_path / "split", resume=ckpt)
        return whole, scalar_values(tmp_path / "split"), ckpt

    return run

