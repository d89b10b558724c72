"""algo=pbrl with algo.labeler=human: the run queues pairs in <run dir>/labelling/, a labeller answers them through
the labelling store (here a thread that prefers the clip of larger true return), and the run learns from the
answers as they arrive, waits for the first ones, stops on a timeout and resumes without losing or repeating any."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from rlrun.cli.train import StoppedBySignal, run_training, validate
from rlrun.core.checkpoint import latest_checkpoint
from rlrun.core.config import ConfigError
from rlrun.core.events import read_scalars
from rlrun.rlhf.labelling import LabelStore, QueueSource
from rlrun.rlhf.reward_models import load_reward_model

MIN_ANSWERS = 5
HUMAN = ["algo=pbrl", "env=cartpole", "algo.labeler=human", "total_timesteps=1024", "algo.num_envs=1",
         "algo.num_steps=128", "algo.num_minibatches=2", "algo.update_epochs=1", "algo.segment_length=8",
         "algo.num_labels=24", f"algo.human.min_answers={MIN_ANSWERS}", "algo.human.poll_interval=0.02",
         "algo.reward_model.hidden_sizes=[16]", "algo.reward_model.ensemble_size=2",
         "algo.reward_model.initial_epochs=3", "algo.reward_model.epochs=1", "checkpoint.interval=512"]
ROLLOUT = 128  # agent steps per PPO iteration


class Labeller:
    """A thread answering a run's queued pairs through :class:`LabelStore`, ``delay`` seconds per answer, until
    :meth:`stop` returns (no answer is written after that)."""

    def __init__(self, run_dir: Path, delay: float = 0.0):
        self.run_dir, self.delay = run_dir, delay
        self.lock, self.stopped, self.error = threading.Lock(), threading.Event(), None
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def true_return(self, segment_id: int) -> float:
        with np.load(self.run_dir / "labelling" / "segments" / f"{segment_id}.npz") as clip:
            return float(clip["rewards"].sum())

    def _loop(self) -> None:
        try:
            while not (self.run_dir / "labelling" / "meta.json").exists():  # the run has not started yet
                if self.stopped.wait(0.01):
                    return
            store = LabelStore(QueueSource(self.run_dir), self.run_dir / "labelling" / "labels.jsonl")
            try:
                while not self.stopped.is_set():
                    with self.lock:
                        item = None if self.stopped.is_set() else store.next_item("bot")
                        if item is not None:
                            ra, rb = self.true_return(item.data["a"]), self.true_return(item.data["b"])
                            store.answer("bot", item.id, {"label": 1.0 if ra > rb else 0.0 if ra < rb else 0.5}, "bot")
                    time.sleep(self.delay if item is not None else 0.01)
            finally:
                store.close()
        except Exception as exc:  # reported by stop()
            self.error = exc

    def stop(self) -> None:
        with self.lock:
            self.stopped.set()
        self.thread.join(10)
        assert self.error is None, self.error


@pytest.fixture
def labeller(tmp_path):
    """labeller(run_dir, delay=0.0) -> a started :class:`Labeller`; every one is stopped after the test."""
    started = []

    def start(run_dir: Path, delay: float = 0.0) -> Labeller:
        started.append(Labeller(run_dir, delay))
        return started[-1]

    yield start
    for bot in started:
        bot.stop()


@pytest.fixture
def stop_labeller_at(monkeypatch):
    """stop_labeller_at(bot, step): ``bot`` answers no more once the next Run reports ``step`` to its progress
    display (a later iteration then reads every answer there is)."""
    from rlrun.core.run import Run

    def arm(bot: Labeller, step: int) -> None:
        original = Run.progress

        def progress_then_stop(self, global_step):
            original(self, global_step)
            if global_step == step:
                bot.stop()

        monkeypatch.setattr(Run, "progress", progress_then_stop)

    return arm


def answer_lines(run_dir: Path) -> list[dict]:
    path = run_dir / "labelling" / "labels.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def queued_pairs(run_dir: Path) -> list[tuple[int, int]]:
    path = run_dir / "labelling" / "queue.jsonl"
    return [(r["a"], r["b"]) for r in map(json.loads, path.read_text().splitlines())]


def assert_distinct(pairs: list[tuple[int, int]]) -> None:
    assert all(a != b for a, b in pairs)
    assert len({frozenset(p) for p in pairs}) == len(pairs)  # no pair twice, either way round


def test_the_run_waits_for_the_first_answers_and_counts_only_answers_it_took(make_cfg, tmp_path, labeller,
                                                                              stop_labeller_at, capsys):
    run_dir = tmp_path / "run"
    (run_dir / "labelling").mkdir(parents=True)
    stranger = {"a": 10**6, "b": 10**6 + 1, "label": 1.0, "labeler": "x", "time": "2020-01-01T00:00:00+00:00",
                "item": "x"}  # an answer to a pair the run never asked: ignored
    (run_dir / "labelling" / "labels.jsonl").write_text(json.dumps(stranger) + "\n")
    bot = labeller(run_dir, delay=0.05)  # slower than a rollout: without waiting, the first fit would come later
    stop_labeller_at(bot, 6 * ROLLOUT)
    run_training(make_cfg(*HUMAN), run_dir)
    assert re.search(rf"^rlrun: waiting for [1-{MIN_ANSWERS}] answers: label with rlrun-label {re.escape(str(run_dir))}$",
                     capsys.readouterr().out, re.MULTILINE)

    scalars = read_scalars(run_dir)
    labels, fits = scalars["charts/labels"], scalars["losses/preference_loss"]
    answers = [r for r in answer_lines(run_dir) if r["item"] != stranger["item"]]
    answered_at = sorted(datetime.fromisoformat(r["time"]).timestamp() for r in answers)  # before each was written
    assert fits[0][0] == labels[0][0] == ROLLOUT and labels[0][1] >= MIN_ANSWERS  # waited on the first rollout
    assert all(value == 0 or value >= MIN_ANSWERS for _, value, _ in labels)
    for _, value, wall in labels:  # never more than the answers on disk when it was logged
        assert value <= sum(t < wall for t in answered_at)
    assert [v for _, v, _ in labels] == sorted(v for _, v, _ in labels)
    assert labels[-1][1] == len(answers) >= MIN_ANSWERS  # every answer taken, once; the stranger's not
    _, payload = load_reward_model(run_dir / "reward_model.pt")
    assert payload["num_labels"] == len(answers)

    pairs = queued_pairs(run_dir)
    assert_distinct(pairs)
    assert len(pairs) <= 24 and {(r["a"], r["b"]) for r in answers} <= set(pairs)
    assert len(list((run_dir / "labelling" / "segments").glob("*.npz"))) == len({i for p in pairs for i in p})


def test_nobody_answering_stops_the_run_with_a_checkpoint_it_resumes_from(make_cfg, tmp_path, labeller, capsys):
    run_dir = tmp_path / "run"
    started = time.monotonic()
    with pytest.raises(StoppedBySignal):
        run_training(make_cfg(*HUMAN, "algo.human.wait_timeout=1"), run_dir)
    assert time.monotonic() - started >= 1
    out = capsys.readouterr().out
    assert "0 of algo.human.min_answers=5 answers after algo.human.wait_timeout=1 s: stopping with a checkpoint" in out
    assert f"continue with: rlrun resume={run_dir}" in out
    _, ckpt = latest_checkpoint(run_dir)
    assert ckpt["global_step"] == ROLLOUT
    asked = queued_pairs(run_dir)
    assert len(asked) >= MIN_ANSWERS and not (run_dir / "reward_model.pt").exists()

    bot = labeller(run_dir)
    run_training(make_cfg(*HUMAN, "algo.human.wait_timeout=1", f"resume={run_dir}"), run_dir, resume=ckpt)
    bot.stop()
    pairs = queued_pairs(run_dir)
    assert pairs[:len(asked)] == asked and len(pairs) > len(asked)
    assert_distinct(pairs)
    labels = read_scalars(run_dir)["charts/labels"]
    assert labels[0][:2] == (ROLLOUT, 0) and labels[-1][1] >= MIN_ANSWERS  # the first rollout learned nothing
    assert labels[-1][1] <= len(answer_lines(run_dir))


def test_a_stopped_and_resumed_run_takes_every_answer_once_and_asks_no_pair_twice(make_cfg, tmp_path, labeller,
                                                                                    interrupt_at, stop_labeller_at):
    run_dir = tmp_path / "run"
    bot = labeller(run_dir, delay=0.01)  # answers all along, also while the run is stopped
    interrupt_at(3 * ROLLOUT, signal.SIGTERM)
    with pytest.raises(StoppedBySignal):
        run_training(make_cfg(*HUMAN), run_dir)
    interrupt_at(None)
    _, ckpt = latest_checkpoint(run_dir)
    assert ckpt["global_step"] == 3 * ROLLOUT
    before = read_scalars(run_dir)["charts/labels"][-1][1]
    time.sleep(0.2)  # answers arrive between the runs
    stop_labeller_at(bot, 7 * ROLLOUT)
    run_training(make_cfg(*HUMAN, f"resume={run_dir}"), run_dir, resume=ckpt)

    labels = [(step, value) for step, value, _ in read_scalars(run_dir)["charts/labels"]]
    assert [step for step, _ in labels] == [ROLLOUT * k for k in range(1, 9)]
    assert labels[2] == (3 * ROLLOUT, before) and before >= MIN_ANSWERS
    assert [v for _, v in labels] == sorted(v for _, v in labels)
    answers = answer_lines(run_dir)
    assert labels[-1][1] == len(answers) == len({(r["a"], r["b"]) for r in answers})  # each answer taken once
    _, payload = load_reward_model(run_dir / "reward_model.pt")
    assert payload["num_labels"] == len(answers)
    pairs = queued_pairs(run_dir)
    assert_distinct(pairs)
    assert len(pairs) <= 24


@pytest.mark.parametrize("override, message", [
    ("algo.labeler=robot", "algo.labeler='robot' is not allowed: expected human (people answer with rlrun-label) "
                           "or the synthetic labeler's keys (mode, temperature, random_answer_prob)"),
    ("algo.human.min_answers=25", "algo.human.min_answers=25 is not allowed: expected at most algo.num_labels=24"),
    ("algo.human.wait_timeout=-1", "algo.human.wait_timeout=-1 is not allowed"),
    ("algo.human.poll_interval=0", "algo.human.poll_interval=0 is not allowed"),
])
def test_bad_human_settings_are_refused_before_anything_is_written(make_cfg, tmp_path, override, message):
    cfg = make_cfg(*HUMAN, override)
    with pytest.raises(ConfigError) as refused:
        run_training(cfg, tmp_path / "run")
    assert str(refused.value).startswith(message)
    assert not (tmp_path / "run").exists()


def test_the_synthetic_labeler_and_people_are_both_valid(make_cfg):
    validate(make_cfg(*HUMAN))
    validate(make_cfg(*[o for o in HUMAN if o != "algo.labeler=human"], "algo.labeler.mode=bradley_terry"))
