"""Learning checks on CartPole (about 20 s each): marked slow, run them with pytest -m slow."""

from __future__ import annotations

import pytest

from rlrun.cli.train import run_training

CARTPOLE_SOLVED = 195.0  # the classic CartPole threshold (gym's CartPole-v0 "solved" criterion)
CARTPOLE_SOLVED_V1 = 475.0  # CartPole-v1's reward threshold in gymnasium's registry


@pytest.mark.slow
def test_dqn_learns_cartpole(make_cfg, tmp_path):
    """CleanRL dqn.py settings (tuned/dqn_cartpole), 100k agent steps, seed 2: the last 20 training
    episodes (epsilon 0.05) average at least 195. Measured on our 2-core machine in about 15 s:
    272 for seed 2; seeds 1, 3, 4, 5 gave 199, 302, 445, 355."""
    cfg = make_cfg("env=cartpole", "algo=dqn", "total_timesteps=100000", "seed=2",
                   "logging.metric_episodes=20")
    assert run_training(cfg, tmp_path / "run") >= CARTPOLE_SOLVED


@pytest.mark.slow
def test_ppo_learns_cartpole(make_cfg, tmp_path):
    """CleanRL ppo.py settings (tuned/ppo_cartpole, NumPy-vectorized CartPole), 200k agent steps, seed 2:
    the trained policy's mode scores at least 475 over 10 evaluation episodes. Measured for seeds 1-5:
    484.9, 500.0, 500.0, 482.7, 487.4."""
    from rlrun.cli.evaluate import evaluate_checkpoint

    cfg = make_cfg("env=cartpole", "algo=ppo", "total_timesteps=200000", "seed=2")
    run_training(cfg, tmp_path / "run")
    assert evaluate_checkpoint(tmp_path / "run", episodes=10)["mean"] >= CARTPOLE_SOLVED_V1
