"""Learning checks. Those that take over a minute are marked slow (run them with pytest -m slow)."""

from __future__ import annotations

from rlrun.cli import run_training

CARTPOLE_SOLVED = 195.0  # the classic CartPole threshold (gym's CartPole-v0 "solved" criterion)


def test_dqn_learns_cartpole(make_cfg, tmp_path):
    """CleanRL dqn.py settings (tuned/dqn_cartpole), 100k agent steps, seed 2: the last 20 training
    episodes (epsilon 0.05) average at least 195. Measured on our 2-core machine in about 15 s:
    272 for seed 2; seeds 1, 3, 4, 5 gave 199, 302, 445, 355."""
    cfg = make_cfg("env=cartpole", "algo=dqn", "total_timesteps=100000", "seed=2",
                   "logging.metric_episodes=20", "logging.progress=none")
    assert run_training(cfg, tmp_path / "run") >= CARTPOLE_SOLVED
