"""Long learning checks (pytest -m slow): run them before resolving a learning-related change."""

from __future__ import annotations

import pytest

from rlrun.cli import run_training

CARTPOLE_SOLVED = 195.0  # the classic CartPole threshold (Barto et al. 1983; gym's CartPole-v0 "solved")


@pytest.mark.slow
def test_dqn_learns_cartpole(make_cfg, tmp_path):
    """CleanRL dqn.py settings, 100k agent steps, seed 2: the last 20 training episodes (epsilon 0.05)
    average at least 195. Measured: 272 on our 2-core machine (about 1 minute)."""
    cfg = make_cfg("env=cartpole", "algo=dqn", "total_timesteps=100000", "seed=2",
                   "logging.metric_episodes=20", "logging.progress=none")
    assert run_training(cfg, tmp_path / "run") >= CARTPOLE_SOLVED
