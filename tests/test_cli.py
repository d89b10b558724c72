"""The rlrun command end to end, in a subprocess: a real run, and bad input before any work."""

from __future__ import annotations

import pytest


def test_cartpole_run_from_the_command_line(tmp_path, rlrun):
    out = rlrun("env=cartpole", "total_timesteps=2000", "algo.learning_starts=500", "logging.progress=lines",
                "logging.progress_interval=0.01", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    run_dirs = list((tmp_path / "outputs").glob("*/*_dqn_cartpole_s1"))
    assert len(run_dirs) == 1, list((tmp_path / "outputs").rglob("*"))
    run_dir = run_dirs[0]
    assert f"run directory {run_dir}" in out.stdout and "tensorboard --logdir" in out.stdout
    assert "[rlrun] step" in out.stdout and "ETA=" in out.stdout  # plain progress lines off a terminal
    assert (run_dir / "checkpoints" / "step_000000002000.pt").exists()
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("events")) == [
        "checkpoints", "config.yaml"]  # nothing else written into the run dir


def test_cfg_job_prints_the_composed_config(tmp_path, rlrun):
    out = rlrun("env=cartpole", "--cfg", "job", cwd=tmp_path)
    assert out.returncode == 0 and "hidden_sizes:" in out.stdout and "name: none" in out.stdout
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("args, expected", [
    (["algo.learning_rate=-1"], "rlrun: invalid config: algo.learning_rate=-1 is not allowed: expected a number > 0"),
    (["algo.learning_rate=fast"], "rlrun: invalid config: algo.learning_rate='fast' is not allowed"),
    (["env=atari", "env.id=breakot"], "rlrun: invalid config: env.id='breakot' is not allowed: expected an ALE game"),
    (["algo.batch_size=64", "replay.buffer_size=10"], "rlrun: invalid config: algo.batch_size=64 is not allowed: expected at most"),
])
def test_bad_values_end_with_one_line_and_leave_nothing(tmp_path, args, expected, rlrun):
    out = rlrun(*args, cwd=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), out.stderr
    assert "Traceback" not in out.stderr
    assert not any(p.is_file() for p in tmp_path.rglob("*"))  # no run dir, config or event file left


@pytest.mark.parametrize("args, expected", [
    (["algo.learning_rat=1"], "Key 'learning_rat' is not in struct"),
    (["env=breakoutt"], "Could not find 'env/breakoutt'"),
])
def test_unknown_keys_and_options_are_refused_by_hydra(tmp_path, args, expected, rlrun):
    out = rlrun(*args, cwd=tmp_path)
    assert out.returncode != 0 and expected in out.stderr, out.stderr
    assert not (tmp_path / "outputs").exists()


def test_an_existing_run_directory_is_refused_and_left_intact(tmp_path, rlrun):
    run_dir = tmp_path / "mine"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("precious: true\n")
    out = rlrun("env=cartpole", "total_timesteps=100", "algo.learning_starts=10", f"hydra.run.dir={run_dir}",
                cwd=tmp_path)
    assert out.returncode == 2 and "already holds a run" in out.stderr
    assert [p.name for p in run_dir.iterdir()] == ["config.yaml"]
    assert (run_dir / "config.yaml").read_text() == "precious: true\n"
