"""Deep reinforcement learning from human preferences: Christiano et al. 2017 (NeurIPS), with PPO
(Schulman et al. 2017) as the policy optimizer, as in the imitation library's preference comparisons.

The loop, inside every PPO iteration (:func:`rlrun.algos.ppo.train` with a ``feedback`` object):

1. the rollout is cut into segments of ``segment_length`` steps (within episodes) that join a pool of
   the ``segment_pool`` most recent ones;
2. labels are requested on a schedule: ``initial_label_fraction`` of the budget ``num_labels`` on the
   first rollout, the rest at a rate decaying as 1 / (1 + label_decay * t / total_timesteps), so that the
   cumulative count reaches the budget at the end. Pairs are drawn from the pool; with
   ``active_selection`` the ones with the largest standard deviation of P(a > b) over the ensemble
   members are chosen among ``candidates_per_label`` random candidates per label (Christiano et al.
   2017, section 2.2.4). The synthetic labeler answers from the true returns;
3. the reward ensemble is retrained on all labels so far (each member on a fresh bootstrap sample);
4. the rollout's rewards are replaced by the normalized ensemble-mean reward, and PPO updates on them.

With ``algo.labeler=human`` people answer instead, asynchronously as in Christiano et al.: step 2 writes
the chosen pairs' clips and appends the pairs to the queue in ``<run dir>/labelling/``
(:class:`rlrun.rlhf.labelling.HumanQueue`; a pair is never asked twice), where ``rlrun-label <run dir>``
serves them, and training goes on. Every iteration reads the answers that arrived in ``labels.jsonl``
(answers to pairs the run never asked are ignored) and retrains on them (step 3). Only answers count
towards the schedule: each time the run asks for the labels due minus the pairs already asked (answered
or outstanding). Before the first fit it waits for ``human.min_answers`` answers, polling the file every
``human.poll_interval`` seconds; a stop signal ends the wait, and after ``human.wait_timeout`` seconds
(0: none) the run stops as on a stop signal, with a resumable checkpoint. The answers taken are in the
checkpoint, the queue and the answers on disk: a resumed run loses no answer and asks no pair again.

The reward is r(s, a) as in Christiano et al.; ``reward_model.use_actions=false`` makes it r(s), and
``reward_model.use_next_obs=true`` makes it r(s, a, s'), which also sees the observation each step led to.
Until the first fit it is the untrained ensemble's.

Logs charts/episodic_return (the true return), charts/learned_episodic_return, charts/labels (used so
far), charts/reward_model_accuracy (of the model before it trains on them, on the newly labelled pairs),
losses/preference_loss, and charts/pearson / charts/spearman between predicted and true returns of the
rollout's segments. Writes ``reward_model.pt`` at the end (usable with ``reward=learned``).
"""

from __future__ import annotations

import signal
import time

import numpy as np
import torch
from omegaconf import DictConfig

from rlrun.algos import ppo
from rlrun.core.config import ConfigError, check_bool, check_choice, check_int, check_number, fail, get
from rlrun.core.registry import AlgoSpec, register
from rlrun.core.run import Run, resolve_device
from rlrun.envs.factory import env_spaces
from rlrun.rlhf.fitting import evaluate_pairs, fitter_from_config, validate_model_keys
from rlrun.rlhf.labelling import HumanQueue
from rlrun.rlhf.preference_data import cut_segments
from rlrun.rlhf.preferences import SyntheticLabeler, correlations
from rlrun.rlhf.reward_models import action_features_size, save_reward_model

HUMAN = "human"  # algo.labeler=human: people answer through rlrun-label


def validate(cfg: DictConfig) -> None:
    """PPO's checks plus the preference learner's keys; raises ConfigError."""
    ppo.validate(cfg)
    a = "algo."
    num_labels = check_int(cfg, a + "num_labels", low=1)
    check_number(cfg, a + "initial_label_fraction", low=0, high=1)
    check_number(cfg, a + "label_decay", low=0)
    check_int(cfg, a + "segment_length", low=1)
    check_int(cfg, a + "segment_pool", low=2)
    check_bool(cfg, a + "active_selection")
    check_int(cfg, a + "candidates_per_label", low=1)
    labeler = get(cfg, a + "labeler")
    if isinstance(labeler, DictConfig):
        check_choice(cfg, a + "labeler.mode", ["deterministic", "bradley_terry"])
        check_number(cfg, a + "labeler.temperature", low=0, low_open=True)
        check_number(cfg, a + "labeler.random_answer_prob", low=0, high=1)
    elif labeler != HUMAN:
        fail(a + "labeler", labeler, f"{HUMAN} (people answer with rlrun-label) or the synthetic labeler's keys "
             "(mode, temperature, random_answer_prob)")
    else:
        min_answers = check_int(cfg, a + "human.min_answers", low=1)
        if min_answers > num_labels:
            fail(a + "human.min_answers", min_answers, f"at most algo.num_labels={num_labels} (no more are asked)")
        check_number(cfg, a + "human.wait_timeout", low=0)
        check_number(cfg, a + "human.poll_interval", low=0, low_open=True)
    r = a + "reward_model."
    validate_model_keys(cfg, r)
    check_int(cfg, r + "initial_epochs", low=1)
    check_int(cfg, r + "epochs", low=1)
    if int(cfg.algo.segment_length) > int(cfg.algo.num_steps):
        raise ConfigError(f"algo.segment_length={cfg.algo.segment_length} is not allowed: expected at most "
                          f"algo.num_steps={cfg.algo.num_steps} (segments are cut from one rollout)")
    try:
        action_features_size(env_spaces(cfg)[1])
    except ValueError as exc:
        raise ConfigError(f"env={cfg.env.name}: {exc}") from None


def labels_due(progress: float, budget: int, initial_fraction: float, decay: float) -> int:
    """Cumulative labels to have requested once ``progress`` (in [0, 1]) of the run is done: the initial
    share, then the rest at a rate proportional to 1 / (1 + decay * progress)."""
    rest = 1.0 - initial_fraction
    shape = progress if decay == 0 else np.log1p(decay * progress) / np.log1p(decay)
    return min(budget, int(round(budget * (initial_fraction + rest * shape))))


class PreferenceLearner:
    """The ``feedback`` of :func:`rlrun.algos.ppo.train`: collects segments, asks for labels, trains the
    reward ensemble and relabels each rollout with it (see the module docstring)."""

    def __init__(self, cfg: DictConfig, run: Run, obs_space, action_space):
        a, r = cfg.algo, cfg.algo.reward_model
        self.cfg, self.run = cfg, run
        self.fitter = fitter_from_config(r, obs_space.shape, action_space, resolve_device(cfg.device), int(cfg.seed))
        self.ensemble = self.fitter.ensemble
        self.human = not isinstance(a.labeler, DictConfig)  # validate allows only "human" besides the dict
        self.labeler = None if self.human else SyntheticLabeler(
            a.labeler.mode, float(a.labeler.temperature), float(a.labeler.random_answer_prob), seed=int(cfg.seed))
        self.queue = HumanQueue(run.dir, cfg.env.id, obs_space.shape) if self.human else None
        self.asked = set(self.queue.queued()) if self.human else set()  # (a, b) pairs queued, read back on resume
        self.consumed: set[tuple[int, int]] = set()  # (a, b) pairs whose answers the fitter has
        self.rng = np.random.default_rng(int(cfg.seed))  # pair selection
        self.pool: list[tuple[np.ndarray | int, ...]] = []  # (id, obs, actions, true rewards[, next obs])
        self.next_id = 0
        self.fitter_row: dict[int, int] = {}  # segment id -> row of its copy in the fitter
        self.labels_used = 0
        self.trained = False
        self.learned_returns = np.zeros(int(a.num_envs), np.float64)

    # ---- the feedback interface --------------------------------------------------------------------
    def relabel(self, global_step: int, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
                episode_end: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
        """Learn from this (T, N) rollout and return its (T, N) float32 learned rewards."""
        a = self.cfg.algo
        if not self.ensemble.use_next_obs:
            next_obs = None  # kept out of the pool: r(s, a) never reads it
        clips = cut_segments(obs, actions, rewards, episode_end, int(a.segment_length), next_obs)
        for clip in clips:
            self.pool.append((self.next_id, *clip))
            self.next_id += 1
        del self.pool[:-int(a.segment_pool)]
        scalars = {}
        batch = rewards.size  # the schedule runs from the first rollout (0) to the last (1)
        progress = (global_step - batch) / max(self.run.total - batch - self.run.total % batch, 1)
        # people: every pair asked so far counts, answered or outstanding (a skipped one not: another is asked
        # instead), so the queue keeps to the schedule
        have = len(self.asked - self.queue.skipped()) if self.human else self.labels_used
        need = labels_due(min(progress, 1.0), int(a.num_labels), float(a.initial_label_fraction),
                          float(a.label_decay)) - have
        if need > 0 and len(self.pool) >= 2:
            scalars.update(self.request_labels(need))
        if self.human:
            scalars.update(self.take_answers())
        T, N = rewards.shape
        learned = self.ensemble.reward(*(None if x is None else x.reshape(T * N, *x.shape[2:])
                                         for x in (obs, actions, next_obs))).cpu().numpy().reshape(T, N)
        for t in range(T):  # learned episodic returns, logged at the step where each episode ended
            self.learned_returns += learned[t]
            for i in np.flatnonzero(episode_end[t]):
                self.run.writer.add_scalar("charts/learned_episodic_return", self.learned_returns[i],
                                           global_step - (T - 1 - t) * N)
                self.learned_returns[i] = 0.0
        if len(clips) >= 2:
            predicted = self.predicted_returns(clips).mean(0)
            scalars["charts/pearson"], scalars["charts/spearman"] = correlations(
                predicted.cpu().numpy(), np.array([c[2].sum() for c in clips]))
        self.run.log(global_step, {"charts/labels": self.labels_used, **scalars})
        return learned.astype(np.float32)

    def request_labels(self, need: int) -> dict[str, float]:
        """Choose up to ``need`` pairs from the pool; label them and retrain (synthetic labeler), or queue them
        for people. Returns scalars to log."""
        first, second = self.choose_pairs(need)
        pairs = [(self.pool[i][0], self.pool[j][0]) for i, j in zip(first, second)]
        if self.human:
            if not pairs:
                return {}
            for index in np.unique(np.concatenate([first, second])):
                self.queue.add_segment(self.pool[index][0], *self.pool[index][1:])
            self.queue.enqueue(pairs)
            self.asked.update(pairs)
            return {}
        true = np.array([seg[3].sum() for seg in self.pool], np.float64)
        labels = self.labeler(true[first], true[second])
        return self.learn({self.pool[i][0]: self.pool[i][1:] for i in np.concatenate([first, second])}, pairs, labels)

    def choose_pairs(self, need: int) -> tuple[np.ndarray, np.ndarray]:
        """Pool indices of up to ``need`` pairs: random ones, or with active selection the candidates with the
        largest disagreement of the members. For people, pairs asked before (either way round) are left out."""
        a = self.cfg.algo
        n = len(self.pool)
        candidates = need * int(a.candidates_per_label) if a.active_selection and self.trained else need
        first = self.rng.integers(0, n, candidates)
        second = (first + self.rng.integers(1, n, candidates)) % n
        if self.human:
            seen, keep = {frozenset(pair) for pair in self.asked}, []
            for k, (i, j) in enumerate(zip(first, second)):
                pair = frozenset((self.pool[i][0], self.pool[j][0]))
                if pair not in seen:
                    seen.add(pair)
                    keep.append(k)
            first, second = first[keep], second[keep]
        if len(first) > need:  # active selection: the largest disagreement of the members
            returns = self.predicted_returns([seg[1:] for seg in self.pool])  # (K, n)
            disagreement = torch.sigmoid(returns[:, first] - returns[:, second]).std(0) if len(returns) > 1 \
                else -torch.sigmoid(returns[0, first] - returns[0, second]).sub(0.5).abs()  # K = 1: nearest to 0.5
            chosen = torch.argsort(disagreement, descending=True)[:need].numpy()
            first, second = first[chosen], second[chosen]
        return first, second

    def take_answers(self) -> dict[str, float]:
        """Retrain on the people's answers that arrived since the last call; before the first fit, wait for
        ``human.min_answers`` of them once that many pairs are queued. Returns scalars to log."""
        want = int(self.cfg.algo.human.min_answers)
        fresh = self.new_answers()
        if not self.trained and len(fresh) < want:
            if len(self.asked) < want:
                return {}
            fresh = self.wait_for_answers(fresh, want)
            if len(fresh) < want:
                return {}
        if not fresh:
            return {}
        clips = {}
        for seg_id in {i for a, b, _ in fresh for i in (a, b)} - set(self.fitter_row):
            segment = self.queue.segment(seg_id)
            clips[seg_id] = tuple(segment[k] for k in ("obs", "actions", "rewards", "next_obs") if k in segment)
        scalars = self.learn(clips, [(a, b) for a, b, _ in fresh], np.array([y for *_, y in fresh], np.float32))
        self.consumed.update((a, b) for a, b, _ in fresh)
        return scalars

    def new_answers(self) -> list[tuple[int, int, float]]:
        """(a, b, label) of the answers in labels.jsonl to pairs this run asked and has not learned from yet
        (the first answer of a pair counts)."""
        fresh: dict[tuple[int, int], float] = {}
        for a, b, label in self.queue.answers():
            if (a, b) in self.asked and (a, b) not in self.consumed:
                fresh.setdefault((a, b), label)
        return [(a, b, label) for (a, b), label in fresh.items()]

    def wait_for_answers(self, fresh: list, want: int) -> list[tuple[int, int, float]]:
        """Poll labels.jsonl until ``want`` new answers are there, a stop signal arrives or ``human.wait_timeout``
        passes (then stop the run as a stop signal does: it ends with a resumable checkpoint)."""
        h, where = self.cfg.algo.human, self.run.dir
        timeout, start = float(h.wait_timeout), time.monotonic()
        print(f"rlrun: waiting for {want - len(fresh)} answers: label with rlrun-label {where}", flush=True)
        while len(fresh) < want and not self.run.should_stop:
            if timeout and time.monotonic() - start >= timeout:
                print(f"rlrun: {len(fresh)} of algo.human.min_answers={want} answers after algo.human.wait_timeout="
                      f"{timeout:g} s: stopping with a checkpoint; label with rlrun-label {where}, then continue "
                      f"with rlrun resume={where}", flush=True)
                self.run.stop_signal = signal.SIGTERM  # what a SIGTERM does: end the loop, write a checkpoint
                break
            time.sleep(float(h.poll_interval))
            fresh = self.new_answers()
        return fresh

    def learn(self, clips: dict[int, tuple], pairs: list[tuple[int, int]], labels: np.ndarray) -> dict[str, float]:
        """Add labelled ``pairs`` of segment ids (``clips``: id -> clip, for those the fitter may not have yet) to
        the fitter and retrain; returns the accuracy on them before training, and the loss."""
        r = self.cfg.algo.reward_model
        new_ids = sorted(i for i in clips if i not in self.fitter_row)
        for seg_id in new_ids:
            self.fitter_row[seg_id] = len(self.fitter_row)
        rows = np.array([[self.fitter_row[a], self.fitter_row[b]] for a, b in pairs], np.int64)
        scalars = {}
        stored = (self.fitter.obs, self.fitter.actions, self.fitter.next_obs)
        new = self.arrays([clips[i] for i in new_ids]) if new_ids else [x if x is None else x[:0] for x in stored]
        if self.trained:  # accuracy on fresh labels, before training on them
            every = [x if x is None else np.concatenate([x, fresh]) for x, fresh in zip(stored, new)]
            scalars["charts/reward_model_accuracy"] = evaluate_pairs(
                self.ensemble, every[0], every[1], rows, labels, float(r.random_answer_prob), every[2])["accuracy"]
        self.fitter.add(new[0], new[1], rows, labels, new[2])
        epochs = int(r.epochs) if self.trained else int(r.initial_epochs)
        scalars["losses/preference_loss"] = self.fitter.fit(epochs)
        self.trained = True
        self.labels_used += len(pairs)
        return scalars

    @staticmethod
    def arrays(clips: list[tuple]) -> list[np.ndarray | None]:
        """(M, L, ...) observations, actions and next observations (None for r(s, a)) of M clips
        (obs, actions, true rewards[, next obs]) as :func:`cut_segments` cuts them."""
        return [np.stack([clip[k] for clip in clips]) if k < len(clips[0]) else None for k in (0, 1, 3)]

    def predicted_returns(self, clips: list[tuple]) -> torch.Tensor:
        """(K, M) returns of M clips under each member, without gradient."""
        with torch.no_grad():
            return self.ensemble.segment_returns(*(x if x is None else torch.as_tensor(x)
                                                   for x in self.arrays(clips))).cpu()

    def state_dict(self) -> dict:
        """Everything needed to continue exactly (tensors and plain values); people's queue and answers are on disk."""
        state = {"fitter": self.fitter.state_dict(), "rng": self.rng.bit_generator.state, "next_id": self.next_id,
                 "labels_used": self.labels_used, "trained": self.trained,
                 "learned_returns": torch.from_numpy(self.learned_returns.copy()),
                 "pool_ids": torch.tensor([seg[0] for seg in self.pool], dtype=torch.int64),
                 "pool": [tuple(torch.from_numpy(x) for x in seg[1:]) for seg in self.pool],
                 "fitter_ids": torch.tensor(list(self.fitter_row), dtype=torch.int64)}
        if self.human:
            state["consumed"] = torch.tensor(sorted(self.consumed), dtype=torch.int64).reshape(-1, 2)
        else:
            state["labeler_rng"] = self.labeler.rng.bit_generator.state
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output."""
        self.fitter.load_state_dict(state["fitter"])
        self.rng.bit_generator.state = state["rng"]
        self.next_id, self.labels_used, self.trained = state["next_id"], state["labels_used"], state["trained"]
        self.learned_returns = state["learned_returns"].numpy().copy()
        self.pool = [(int(i), *(x.numpy().copy() for x in seg)) for i, seg in zip(state["pool_ids"], state["pool"])]
        self.fitter_row = {int(i): row for row, i in enumerate(state["fitter_ids"])}
        if self.human:
            self.consumed = {(int(a), int(b)) for a, b in state["consumed"].tolist()}
            # a process killed after its last checkpoint may have written clips of later ids: never reuse one
            written = [int(p.stem) for p in (self.queue.dir / "segments").glob("*.npz") if p.stem.isdigit()]
            self.next_id = max([self.next_id, *(i + 1 for i in written)])
        else:
            self.labeler.rng.bit_generator.state = state["labeler_rng"]


def train(cfg: DictConfig, run: Run) -> float:
    """PPO on the learned reward; returns the mean TRUE return of the last episodes."""
    obs_space, action_space = env_spaces(cfg)
    learner = PreferenceLearner(cfg, run, obs_space, action_space)
    metric = ppo.train(cfg, run, feedback=learner)
    if learner.trained and not run.should_stop:
        path = save_reward_model(learner.ensemble, run.dir / "reward_model.pt", cfg.env.id,
                                 extra={"num_labels": learner.labels_used})
        print(f"rlrun: reward model from {learner.labels_used} labels written to {path}", flush=True)
    return metric


register(AlgoSpec("pbrl", validate, train, ppo.make_policy))  # its checkpoints play like PPO's
