"""Runs survive: kill and resume to identical curves, clean stop on signals, safe fallbacks."""

from __future__ import annotations

import errno
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from rlrun.cli.train import StoppedBySignal, run_training
from rlrun.core.checkpoint import CheckpointError, checkpoint_paths, latest_checkpoint
from rlrun.core.config import ConfigError
from rlrun.core.events import read_scalars, scalar_values as scalars
from rlrun.core.run import Run
from rlrun.data.replay import ReplayBuffer

CARTPOLE = ["env=cartpole", "total_timesteps=8000", "algo.learning_starts=1000", "checkpoint.interval=1000"]



def wait_for_checkpoints(run_dir: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while len(checkpoint_paths(run_dir)) < n:
        assert proc.poll() is None, "the run ended before it was killed"
        assert time.time() < deadline, f"no {n} checkpoints after {timeout} s"
        time.sleep(0.05)


def test_sigkill_then_resume_gives_the_same_scalars_as_an_uninterrupted_run(make_cfg, tmp_path, rlrun, cli_argv):
    run_training(make_cfg(*CARTPOLE), tmp_path / "whole")
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cli_argv("rlrun", *CARTPOLE, f"hydra.run.dir={killed}"), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_checkpoints(killed, 3, proc)
    time.sleep(0.3)  # let it run past the checkpoint, so there are events to purge
    proc.kill()
    proc.wait()
    step_killed = int(checkpoint_paths(killed)[-1].stem.split("_")[1])
    assert step_killed < 8000
    out = rlrun(f"resume={killed}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"resuming from step {step_killed}" in out.stdout
    whole, resumed = scalars(tmp_path / "whole"), scalars(killed)
    assert whole.keys() == resumed.keys() and len(whole["losses/td_loss"]) == 70
    for tag in whole:
        assert resumed[tag] == whole[tag], tag  # no duplicated, missing or different step
    assert "resumed from step_" in (killed / "resumes.log").read_text()


def test_sigterm_writes_a_checkpoint_and_exits_cleanly(tmp_path, cli_argv):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(cli_argv("rlrun", "env=cartpole", "total_timesteps=10000000", "algo.learning_starts=1000",
                                     f"hydra.run.dir={run_dir}"),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not list(run_dir.glob("events.out.tfevents.*")):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    time.sleep(1.0)
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert time.time() - sent < 10
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "SIGTERM received" in stderr and "Traceback" not in stderr
    assert f"continue with: rlrun resume={run_dir}" in stdout
    path, ckpt = latest_checkpoint(run_dir)
    assert 0 < ckpt["global_step"] < 10_000_000
    assert (run_dir / "checkpoints" / f"replay_{ckpt['global_step']:012d}").is_dir()


def test_a_second_signal_exits_at_once(make_cfg, tmp_path, monkeypatch):
    exits = []
    monkeypatch.setattr("rlrun.core.run.os._exit", exits.append)
    run = Run(make_cfg("env=cartpole"), tmp_path / "run")
    try:
        signal.raise_signal(signal.SIGINT)
        assert run.should_stop and run.stop_signal == signal.SIGINT and exits == []
        signal.raise_signal(signal.SIGINT)
        assert exits == [128 + signal.SIGINT]
    finally:
        run.close()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def test_stop_in_process_raises_after_the_checkpoint(make_cfg, tmp_path, interrupt_at):
    interrupt_at(1500, signal.SIGINT)
    with pytest.raises(StoppedBySignal):
        run_training(make_cfg("env=cartpole", "total_timesteps=5000", "algo.learning_starts=1000"), tmp_path / "run")
    assert [p.name for p in checkpoint_paths(tmp_path / "run")] == ["step_000000001500.pt"]


def make_short_run(make_cfg, run_dir: Path, *extra: str) -> None:
    run_training(make_cfg("env=cartpole", "total_timesteps=3000", "algo.learning_starts=500",
                          "checkpoint.interval=1000", *extra), run_dir)


def test_a_truncated_checkpoint_falls_back_to_the_previous_one(make_cfg, tmp_path, capsys, rlrun):
    run_dir = tmp_path / "run"
    make_short_run(make_cfg, run_dir)
    newest = checkpoint_paths(run_dir)[-1]
    newest.write_bytes(newest.read_bytes()[:1000])
    path, ckpt = latest_checkpoint(run_dir)
    assert path == checkpoint_paths(run_dir)[-2] and ckpt["global_step"] == 2000
    assert f"skipping unusable checkpoint: cannot load checkpoint {newest}" in capsys.readouterr().err
    out = rlrun(f"resume={run_dir}", "total_timesteps=3500", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "resuming from step 2000" in out.stdout
    assert "no replay snapshot for step 2000: refilling the buffer" in out.stdout  # only the newest is kept
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["total_timesteps"] == 3500


def test_replay_buffer_round_trips(make_cfg, tmp_path):
    from rlrun.envs.factory import make_vec_env

    env = make_vec_env(make_cfg("env=breakout"), 2)
    rb = ReplayBuffer(400, (4, 84, 84), np.uint8, num_envs=2, frame_stack=4, seed=3)
    obs, rng = env.reset(seed=0), np.random.default_rng(0)
    for _ in range(300):  # wraps the 200-slot rings
        step = env.step(rng.integers(0, 4, size=2))
        rb.add(obs, step.reward.astype(np.int64), step.reward, step.terminated, step.episode_end, step.final_obs)
        obs = step.obs
    env.close()
    rb.save(tmp_path / "replay")
    copy = ReplayBuffer(400, (4, 84, 84), np.uint8, num_envs=2, frame_stack=4, seed=3)
    copy.load(tmp_path / "replay")
    assert (copy.pos, copy.full, copy.final_frames.keys()) == (rb.pos, rb.full, rb.final_frames.keys())
    a, b = rb.sample(256), copy.sample(256)
    for name in ("obs", "actions", "rewards", "next_obs", "terminated"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    wrong = ReplayBuffer(500, (4, 84, 84), np.uint8, num_envs=2, frame_stack=4)
    with pytest.raises(ValueError, match="frames.npy has shape"):
        wrong.load(tmp_path / "replay")


def test_resume_refuses_experiment_changes_and_edited_configs(make_cfg, tmp_path, rlrun):
    run_dir = tmp_path / "run"
    make_short_run(make_cfg, run_dir)
    out = rlrun(f"resume={run_dir}", "algo.learning_rate=0.1", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip() == ("rlrun: invalid config: algo.learning_rate=0.1 changes the experiment being "
                                  "resumed; only total_timesteps, device, torch_threads, logging, checkpoint, "
                                  "eval may change on resume (start a new run instead)")
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace("- 120", "- 64"))
    out = rlrun(f"resume={run_dir}", cwd=tmp_path)
    assert out.returncode == 2 and "config.yaml was edited: algo.hidden_sizes=[64, 84]" in out.stderr
    assert not (run_dir / "resumes.log").exists()


def test_resume_refuses_a_checkpoint_whose_networks_do_not_match_its_config(make_cfg, tmp_path):
    run_dir = tmp_path / "run"
    make_short_run(make_cfg, run_dir)
    path, ckpt = latest_checkpoint(run_dir)
    ckpt["q_network"] = torch.nn.Sequential(torch.nn.Linear(4, 7)).state_dict()
    torch.save(ckpt, path)
    cfg = make_cfg("env=cartpole", "total_timesteps=3000", "algo.learning_starts=500")
    with pytest.raises(ConfigError, match="the checkpoint's q_network does not match the config"):
        run_training(cfg, run_dir, resume=ckpt)


def test_resuming_what_is_not_a_run_or_has_no_valid_checkpoint_fails_clearly(make_cfg, tmp_path, rlrun):
    out = rlrun(f"resume={tmp_path / 'nothing'}", cwd=tmp_path)
    assert out.returncode == 2 and "is not an rlrun run directory" in out.stderr
    assert not (tmp_path / "nothing").exists()
    run_dir = tmp_path / "run"
    make_short_run(make_cfg, run_dir)
    for p in checkpoint_paths(run_dir):
        p.write_bytes(b"garbage")
    out = rlrun(f"resume={run_dir}", cwd=tmp_path)
    assert out.returncode == 2 and "holds no valid checkpoint" in out.stderr


def test_a_full_disk_keeps_the_previous_checkpoint_and_stops_with_a_clear_error(make_cfg, tmp_path, monkeypatch):
    saves = []
    real_save = torch.save

    def save_until_disk_full(obj, f):
        saves.append(1)
        if len(saves) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, f)

    monkeypatch.setattr("rlrun.core.run.torch.save", save_until_disk_full)
    with pytest.raises(CheckpointError, match="No space left on device; the previous checkpoint .*step_000000001000.pt "
                                              "is intact"):
        make_short_run(make_cfg, tmp_path / "run")
    path, ckpt = latest_checkpoint(tmp_path / "run")
    assert ckpt["global_step"] == 1000
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "replay_000000001000", "step_000000001000.pt"]  # no temporary file, no orphan replay snapshot


def test_atari_resume_restarts_episodes_and_says_so(make_cfg, tmp_path, rlrun):
    run_dir = tmp_path / "run"
    run_training(make_cfg("env=breakout", "total_timesteps=400", "algo.learning_starts=300",
                          "replay.buffer_size=1000"), run_dir)
    out = rlrun(f"resume={run_dir}", "total_timesteps=600", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "the breakout simulator state cannot be saved: episodes restart at step 400" in out.stdout
    steps = [s for s, _, _ in read_scalars(run_dir)["losses/td_loss"]]
    assert steps == sorted(set(steps)) and steps[-1] >= 500
