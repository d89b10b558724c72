"""The Run: directory ownership, atomic checkpoints that keep the last K, safe loading."""

from __future__ import annotations

import pickle

import pytest
import torch

from rlrun.run import Run, RunDirError, load_checkpoint


def test_checkpoint_round_trip_keeps_last_k_and_leaves_no_temporary_files(make_cfg, tmp_path):
    cfg = make_cfg("env=cartpole", "checkpoint.keep_last=2", "checkpoint.interval=10")
    run = Run(cfg, tmp_path / "run")
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters())
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    for step in (10, 20, 30):
        assert run.checkpoint_due(step)
        run.save_checkpoint(step, {"q_network": net.state_dict(), "optimizer": opt.state_dict()})
    assert not run.checkpoint_due(35) and run.checkpoint_due(40)
    run.close()
    files = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert files == ["step_000000000020.pt", "step_000000000030.pt"]
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / files[-1])
    assert ckpt["global_step"] == 30 and ckpt["algo"] == "dqn" and "env:" in ckpt["config"]
    fresh = torch.nn.Linear(3, 2)
    fresh.load_state_dict(ckpt["q_network"])
    torch.testing.assert_close(fresh.weight, net.weight)
    opt2 = torch.optim.Adam(fresh.parameters())
    opt2.load_state_dict(ckpt["optimizer"])
    assert opt2.state_dict()["state"][0]["step"] == 1
    assert set(ckpt["rng"]) >= {"python", "numpy", "torch"}


def test_a_run_directory_is_never_reused(make_cfg, tmp_path):
    cfg = make_cfg("env=cartpole")
    Run(cfg, tmp_path / "run").close()
    before = (tmp_path / "run" / "config.yaml").read_text()
    with pytest.raises(RunDirError, match="already holds a run"):
        Run(make_cfg("env=breakout"), tmp_path / "run")
    assert (tmp_path / "run" / "config.yaml").read_text() == before


def test_loading_refuses_code_and_garbage(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"format": 1, "x": Evil()}))
    with pytest.raises(ValueError, match="cannot load checkpoint"):
        load_checkpoint(evil)
    truncated = tmp_path / "trunc.pt"
    torch.save({"format": 1, "w": torch.ones(1000)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(ValueError, match="cannot load checkpoint"):
        load_checkpoint(truncated)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.ones(2)}, other)
    with pytest.raises(ValueError, match="not an rlrun checkpoint"):
        load_checkpoint(other)


def test_rng_states_round_trip_through_a_safe_checkpoint(make_cfg, tmp_path):
    import random

    import numpy as np

    from rlrun.run import set_rng_state

    run = Run(make_cfg("env=cartpole"), tmp_path / "run")
    path = run.save_checkpoint(1, {})
    run.close()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(load_checkpoint(path)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
