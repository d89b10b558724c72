"""Optional trackers (W&B and trackio) mirror the TensorBoard scalars, the config and the run name; tested in
their offline modes, with no network."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest

from rlrun.core.events import read_scalars
from rlrun.core.trackers import MirroredWriter


class FakeWriter:
    def __init__(self):
        self.scalars, self.closed = [], False

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def add_text(self, tag, text):
        self.scalars.append((tag, text, None))

    def flush(self):
        pass

    def close(self):
        self.closed = True


class FakeTracker:
    def __init__(self):
        self.records, self.finished = [], False

    def log(self, scalars, step):
        self.records.append((step, scalars))

    def finish(self):
        self.finished = True


def test_the_mirror_sends_one_record_per_step_and_keeps_tensorboard_whole():
    tb, tracker = FakeWriter(), FakeTracker()
    writer = MirroredWriter(tb, [tracker])
    writer.add_scalar("losses/td_loss", 0.5, 100)
    writer.add_scalar("charts/SPS", 900, 100)
    writer.add_scalar("charts/episodic_return", 12.0, 104)
    writer.add_text("hyperparameters", "| a | 1 |")  # TensorBoard's alone
    assert tracker.records == [(100, {"losses/td_loss": 0.5, "charts/SPS": 900.0})]
    writer.close()
    assert tracker.records[-1] == (104, {"charts/episodic_return": 12.0}) and tracker.finished and tb.closed
    assert [s[0] for s in tb.scalars] == ["losses/td_loss", "charts/SPS", "charts/episodic_return", "hyperparameters"]


def test_an_unknown_or_missing_tracker_is_one_line(tmp_path, rlrun):
    out = rlrun("env=cartpole", "logging.trackers=[mlflow]", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.strip() == ("rlrun: invalid config: logging.trackers=['mlflow'] is not "
                                                          "allowed: expected a list of trackers from wandb, trackio")
    out = rlrun("env=cartpole", "logging.wandb_mode=sometimes", cwd=tmp_path)
    assert out.returncode == 2 and "logging.wandb_mode='sometimes' is not allowed" in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_wandb_and_trackio_offline_mirror_the_run(tmp_path, cli):
    pytest.importorskip("wandb")
    pytest.importorskip("trackio")
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio"), "WANDB_SILENT": "true"}
    import subprocess

    from tests.conftest import command_line

    run_dir = tmp_path / "run"
    out = subprocess.run(command_line("rlrun", "algo=ppo", "env=cartpole", "total_timesteps=2048",
                                      "logging.trackers=[trackio]", "logging.wandb=true", "logging.wandb_mode=offline",
                                      "logging.project=tracked", f"hydra.run.dir={run_dir}"),
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    returns = read_scalars(run_dir)["charts/episodic_return"]  # TensorBoard: the record
    # trackio: one SQLite file per project, the run under the run directory's name, the same numbers
    db = sqlite3.connect(tmp_path / "trackio" / "tracked.db")
    rows = db.execute("select step, metrics from metrics where run_name = ?", (run_dir.name,)).fetchall()
    mirrored = {(step, json.loads(m)["charts/episodic_return"]) for step, m in rows
                if "charts/episodic_return" in json.loads(m)}
    last_per_step = {step: value for step, value, _ in returns}  # episodes ending on one step: the last one's
    assert mirrored and all(last_per_step[step] == pytest.approx(value) for step, value in mirrored)
    assert {step for step, _ in mirrored} == set(last_per_step)
    config = json.loads(db.execute("select config from configs where run_name = ?", (run_dir.name,)).fetchone()[0])
    assert config["algo"]["name"] == "ppo" and config["total_timesteps"] == 2048
    # W&B offline: a run of the same name in <run dir>/wandb, holding the scalars' tags and the config
    records = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(records) == 1
    data = records[0].read_bytes()
    assert b"charts/episodic_return" in data and b"losses/value_loss" in data and b"clip_coef" in data
    assert run_dir.name.encode() in data
