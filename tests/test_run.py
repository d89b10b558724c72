"""The Run: directory ownership, atomic checkpoints that keep the last K, safe loading, and the state an algorithm
names once (saved, restored in place, validated)."""

from __future__ import annotations

import pickle
import signal

import numpy as np
import pytest
import torch

from rlrun.core.checkpoint import load_checkpoint, set_rng_state
from rlrun.core.config import ConfigError
from rlrun.core.run import Run, RunDirError
from rlrun.core.state import Counters


def test_checkpoint_round_trip_keeps_last_k_and_leaves_no_temporary_files(make_cfg, tmp_path):
    cfg = make_cfg("env=cartpole", "checkpoint.keep_last=2", "checkpoint.interval=10")
    run = Run(cfg, tmp_path / "run")
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters())
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    run.track(q_network=net, optimizer=opt)
    for step in (10, 20, 30):
        assert run.checkpoint_due(step)
        run.save_checkpoint(step)
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

    run = Run(make_cfg("env=cartpole"), tmp_path / "run")
    path = run.save_checkpoint(1)
    run.close()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(load_checkpoint(path)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


class Directory:
    """A directory state, as the replay buffer is: saved beside the checkpoint, never inside it."""

    def __init__(self, values):
        self.values = np.array(values)

    def save(self, directory):
        directory.mkdir(parents=True)
        np.save(directory / "values.npy", self.values)

    def load(self, directory):
        self.values = np.load(directory / "values.npy")


def test_tracked_state_is_saved_by_name_and_loaded_back_in_place(make_cfg, tmp_path):
    cfg = make_cfg("env=cartpole", "checkpoint.interval=0")
    run = Run(cfg, tmp_path / "run")
    net, rng, table = torch.nn.Linear(2, 2), np.random.default_rng(5), np.arange(6.0).reshape(2, 3)
    counters, replay = Counters(updates=7, mse=0.25), Directory([1, 2, 3])
    rng.random(3)  # advance the generator: its state, not its seed, must come back
    run.track(net=net, noise_rng=rng, table=table, counters=counters, replay=replay, derived=lambda: 42, nothing=None)
    ckpt = load_checkpoint(run.save_checkpoint(11))
    run.close()
    expected_draw, expected_weight = rng.random(), net.weight.detach().clone()  # what comes after the checkpoint
    # by name: modules and generators as their states, arrays as tensors, counters at the top level, derived values
    # by value, the directory state beside the file
    assert ckpt["updates"] == 7 and ckpt["mse"] == 0.25 and ckpt["derived"] == 42 and ckpt["nothing"] is None
    assert "counters" not in ckpt and "replay" not in ckpt
    torch.testing.assert_close(ckpt["table"], torch.arange(6.0, dtype=torch.float64).reshape(2, 3))
    assert (tmp_path / "run" / "checkpoints" / "replay_000000000011" / "values.npy").is_file()

    # a resumed run loads every object back in place, before the loop
    net2, rng2, table2 = torch.nn.Linear(2, 2), np.random.default_rng(0), np.zeros((2, 3))
    counters2, replay2 = Counters(updates=0, mse=float("nan"), added_later=3), Directory([])
    resumed = Run(cfg, tmp_path / "run", resume=ckpt)
    resumed.track(net=net2, noise_rng=rng2, table=table2, counters=counters2, replay=replay2, derived=lambda: 0,
                  nothing=None)
    resumed.close()
    torch.testing.assert_close(net2.weight, expected_weight)
    assert rng2.random() == expected_draw
    np.testing.assert_array_equal(table2, np.arange(6.0).reshape(2, 3))
    assert (counters2.updates, counters2.mse, counters2.added_later) == (7, 0.25, 3)  # a newer field keeps its value
    np.testing.assert_array_equal(replay2.values, [1, 2, 3])
    assert resumed.start_step == 11


def test_a_checkpoint_that_does_not_fit_the_tracked_state_is_one_config_error(make_cfg, tmp_path):
    cfg = make_cfg("env=cartpole")
    run = Run(cfg, tmp_path / "run")
    run.track(q_network=torch.nn.Linear(4, 2))
    path = run.save_checkpoint(5)
    run.close()
    ckpt = load_checkpoint(path)
    cases = [(tmp_path / "run", ckpt, {"q_network": torch.nn.Linear(4, 3)}, ConfigError,
              "the checkpoint's q_network does not match the config"),
             (tmp_path / "run", ckpt, {"agent": torch.nn.Linear(4, 2)}, ConfigError, "the checkpoint has no 'agent'"),
             (tmp_path / "other", None, {"rng": np.random.default_rng(0)}, ValueError,
              "cannot track rng: the Run writes these checkpoint entries itself")]
    for run_dir, resume, objects, error, message in cases:
        run = Run(cfg, run_dir, resume=resume)
        try:
            with pytest.raises(error, match=message):
                run.track(**objects)
        finally:
            run.close()


def test_end_iteration_checkpoints_and_evaluates_when_due_and_reports_a_stop(make_cfg, tmp_path):
    cfg = make_cfg("env=cartpole", "checkpoint.interval=100", "eval.interval=250")
    played = []

    def evaluate(state, video_dir):
        played.append((int(state["counter"]), video_dir))
        return {"returns": [1.0, 3.0], "mean": 2.0}

    run = Run(cfg, tmp_path / "run", evaluate=evaluate)
    counters = Counters(counter=0)
    run.track(counters=counters)
    stops = []
    for step in range(60, 601, 60):  # 60, 120, ..., 600
        counters.counter = step
        stops.append(run.end_iteration(step))
    run._on_signal(signal.SIGTERM, None)
    assert run.end_iteration(660) and not any(stops)
    run.close()
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step_*.pt"))
    assert names == [f"step_{s:012d}.pt" for s in (420, 540, 600)]  # past each 100: 120, 240, 300, 420, ...; last 3
    assert played == [(300, None), (540, None)]  # the first steps past 250 and 500
    from rlrun.core.events import read_scalars

    assert [v for _, v, _ in read_scalars(tmp_path / "run")["eval/mean_return"]] == [2.0, 2.0]
