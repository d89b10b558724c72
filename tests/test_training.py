"""Short real training runs: Breakout writes its curves and checkpoints; CartPole is deterministic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlrun.cli.train import run_training
from rlrun.nn.networks import NatureCNN
from rlrun.core.checkpoint import load_checkpoint
from rlrun.core.events import read_scalars

WALL_CLOCK_TAGS = {"charts/SPS"}  # the only scalar that depends on the machine's speed


def test_short_breakout_run_writes_event_files_and_checkpoints(make_cfg, tmp_path):
    cfg = make_cfg("env=breakout", "total_timesteps=600", "algo.learning_starts=400",
                   "replay.buffer_size=1000", "checkpoint.interval=300")
    metric = run_training(cfg, tmp_path / "run")
    scalars = read_scalars(tmp_path / "run")
    for tag in ("charts/episodic_return", "charts/episodic_length", "charts/SPS", "charts/epsilon",
                "losses/td_loss", "losses/q_values"):
        assert scalars.get(tag), f"missing {tag}"
    returns = [v for _, v, _ in scalars["charts/episodic_return"]]
    assert metric == pytest.approx(np.mean(returns))
    assert all(v >= 0 and float(v).is_integer() for v in returns)  # raw Breakout scores
    assert all(300 < length for _, length, _ in scalars["charts/episodic_length"])  # 5 lives, not one
    ckpts = sorted((tmp_path / "run" / "checkpoints").glob("step_*.pt"))
    assert [p.name for p in ckpts] == ["step_000000000300.pt", "step_000000000600.pt"]
    ckpt = load_checkpoint(ckpts[-1])
    assert ckpt["global_step"] == 600
    net = NatureCNN(4, 4)
    net.load_state_dict(ckpt["q_network"])
    assert (tmp_path / "run" / "config.yaml").read_text().count("breakout") >= 1


def cartpole_scalars(make_cfg, run_dir, seed):
    cfg = make_cfg("env=cartpole", "total_timesteps=3000", "algo.learning_starts=1000",
                   f"seed={seed}")
    run_training(cfg, run_dir)
    return {tag: [(s, v) for s, v, _ in events] for tag, events in read_scalars(run_dir).items()
            if tag not in WALL_CLOCK_TAGS}


@pytest.fixture
def restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_same_seed_gives_identical_scalars_on_cpu(make_cfg, tmp_path, restore_torch_threads):
    a = cartpole_scalars(make_cfg, tmp_path / "a", seed=7)
    b = cartpole_scalars(make_cfg, tmp_path / "b", seed=7)
    c = cartpole_scalars(make_cfg, tmp_path / "c", seed=8)
    assert a.keys() >= {"charts/episodic_return", "losses/td_loss", "losses/q_values"}
    assert a == b
    assert a["losses/td_loss"] != c["losses/td_loss"]


@pytest.mark.parametrize("overrides", [
    ["algo.double_dqn=true", "algo.loss=huber", "algo.max_grad_norm=10"],
    ["algo.tau=0.005", "algo.target_network_frequency=1", "algo.num_envs=4", "algo.train_frequency=2"],
])
def test_dqn_variants_train_and_write_finite_losses(make_cfg, tmp_path, overrides):
    cfg = make_cfg("env=cartpole", "total_timesteps=2000", "algo.learning_starts=500",
                   *overrides)
    run_training(cfg, tmp_path / "run")
    losses = [v for _, v, _ in read_scalars(tmp_path / "run")["losses/td_loss"]]
    assert len(losses) >= 10 and np.isfinite(losses).all()
