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

Logs charts/episodic_return (the true return), charts/learned_episodic_return, charts/labels (used so
far), charts/reward_model_accuracy (of the model before it trains on them, on the newly labelled pairs),
losses/preference_loss, and charts/pearson / charts/spearman between predicted and true returns of the
rollout's segments. Writes ``reward_model.pt`` at the end (usable with ``reward=learned``).
"""

from __future__ import annotations

import numpy as np
import torch
from omegaconf import DictConfig

from rlrun.algos import ppo
from rlrun.config import ConfigError, check_bool, check_choice, check_int, check_number
from rlrun.envs import env_spaces
from rlrun.learned_reward import (action_features_size, evaluate_pairs, fitter_from_config, save_reward_model,
                                  validate_model_keys)
from rlrun.preferences import SyntheticLabeler, correlations, cut_segments
from rlrun.run import Run, resolve_device

make_policy = ppo.make_policy  # checkpoints play like PPO's (rlrun-eval)


def validate(cfg: DictConfig) -> None:
    """PPO's checks plus the preference learner's keys; raises ConfigError."""
    ppo.validate(cfg)
    a = "algo."
    check_int(cfg, a + "num_labels", low=1)
    check_number(cfg, a + "initial_label_fraction", low=0, high=1)
    check_number(cfg, a + "label_decay", low=0)
    check_int(cfg, a + "segment_length", low=1)
    check_int(cfg, a + "segment_pool", low=2)
    check_bool(cfg, a + "active_selection")
    check_int(cfg, a + "candidates_per_label", low=1)
    check_choice(cfg, a + "labeler.mode", ["deterministic", "bradley_terry"])
    check_number(cfg, a + "labeler.temperature", low=0, low_open=True)
    check_number(cfg, a + "labeler.random_answer_prob", low=0, high=1)
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
        self.labeler = SyntheticLabeler(a.labeler.mode, float(a.labeler.temperature),
                                        float(a.labeler.random_answer_prob), seed=int(cfg.seed))
        self.rng = np.random.default_rng(int(cfg.seed))  # pair selection
        self.pool: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []  # (id, obs, actions, true rewards)
        self.next_id = 0
        self.fitter_row: dict[int, int] = {}  # segment id -> row of its copy in the fitter
        self.labels_used = 0
        self.trained = False
        self.learned_returns = np.zeros(int(a.num_envs), np.float64)

    # ---- the feedback interface --------------------------------------------------------------------
    def relabel(self, global_step: int, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
                episode_end: np.ndarray) -> np.ndarray:
        """Learn from this (T, N) rollout and return its (T, N) float32 learned rewards."""
        a = self.cfg.algo
        clips = cut_segments(obs, actions, rewards, episode_end, int(a.segment_length))
        for clip in clips:
            self.pool.append((self.next_id, *clip))
            self.next_id += 1
        del self.pool[:-int(a.segment_pool)]
        scalars = {}
        batch = rewards.size  # the schedule runs from the first rollout (0) to the last (1)
        progress = (global_step - batch) / max(self.run.total - batch - self.run.total % batch, 1)
        need = labels_due(min(progress, 1.0), int(a.num_labels), float(a.initial_label_fraction),
                          float(a.label_decay)) - self.labels_used
        if need > 0 and len(self.pool) >= 2:
            scalars.update(self.request_labels(need))
        T, N = rewards.shape
        learned = self.ensemble.reward(obs.reshape(T * N, *obs.shape[2:]),
                                       actions.reshape(T * N, *actions.shape[2:])).cpu().numpy().reshape(T, N)
        for t in range(T):  # learned episodic returns, logged at the step where each episode ended
            self.learned_returns += learned[t]
            for i in np.flatnonzero(episode_end[t]):
                self.run.writer.add_scalar("charts/learned_episodic_return", self.learned_returns[i],
                                           global_step - (T - 1 - t) * N)
                self.learned_returns[i] = 0.0
        if len(clips) >= 2:
            with torch.no_grad():
                predicted = self.ensemble.segment_returns(torch.as_tensor(np.stack([c[0] for c in clips])),
                                                          torch.as_tensor(np.stack([c[1] for c in clips]))).mean(0)
            scalars["charts/pearson"], scalars["charts/spearman"] = correlations(
                predicted.cpu().numpy(), np.array([c[2].sum() for c in clips]))
        self.run.log(global_step, {"charts/labels": self.labels_used, **scalars})
        return learned.astype(np.float32)

    def request_labels(self, need: int) -> dict[str, float]:
        """Choose ``need`` pairs from the pool, label them, and retrain; returns scalars to log."""
        a, r = self.cfg.algo, self.cfg.algo.reward_model
        n = len(self.pool)
        candidates = need * int(a.candidates_per_label) if a.active_selection and self.trained else need
        first = self.rng.integers(0, n, candidates)
        second = (first + self.rng.integers(1, n, candidates)) % n
        if candidates > need:  # active selection: the largest disagreement of the members
            obs = torch.as_tensor(np.stack([seg[1] for seg in self.pool]))
            actions = torch.as_tensor(np.stack([seg[2] for seg in self.pool]))
            with torch.no_grad():
                returns = self.ensemble.segment_returns(obs, actions).cpu()  # (K, n)
            disagreement = torch.sigmoid(returns[:, first] - returns[:, second]).std(0) if len(returns) > 1 \
                else -torch.sigmoid(returns[0, first] - returns[0, second]).sub(0.5).abs()  # K = 1: nearest to 0.5
            chosen = torch.argsort(disagreement, descending=True)[:need].numpy()
            first, second = first[chosen], second[chosen]
        true = np.array([seg[3].sum() for seg in self.pool], np.float64)
        labels = self.labeler(true[first], true[second])
        new_rows = []
        for index in np.unique(np.concatenate([first, second])):
            seg_id = self.pool[index][0]
            if seg_id not in self.fitter_row:
                self.fitter_row[seg_id] = len(self.fitter_row)
                new_rows.append(index)
        pairs = np.array([[self.fitter_row[self.pool[i][0]], self.fitter_row[self.pool[j][0]]]
                          for i, j in zip(first, second)], np.int64)
        scalars = {}
        new_obs = np.stack([self.pool[i][1] for i in new_rows]) if new_rows else self.fitter.obs[:0]
        new_actions = np.stack([self.pool[i][2] for i in new_rows]) if new_rows else self.fitter.actions[:0]
        if self.trained:  # accuracy on fresh labels, before training on them
            all_obs = np.concatenate([self.fitter.obs, new_obs])
            all_actions = np.concatenate([self.fitter.actions, new_actions])
            scalars["charts/reward_model_accuracy"] = evaluate_pairs(self.ensemble, all_obs, all_actions, pairs,
                                                                     labels, float(r.random_answer_prob))["accuracy"]
        self.fitter.add(new_obs, new_actions, pairs, labels)
        epochs = int(r.epochs) if self.trained else int(r.initial_epochs)
        scalars["losses/preference_loss"] = self.fitter.fit(epochs)
        self.trained = True
        self.labels_used += need
        return scalars

    def state_dict(self) -> dict:
        """Everything needed to continue exactly (tensors and plain values)."""
        return {"fitter": self.fitter.state_dict(), "labeler_rng": self.labeler.rng.bit_generator.state,
                "rng": self.rng.bit_generator.state, "next_id": self.next_id, "labels_used": self.labels_used,
                "trained": self.trained, "learned_returns": torch.from_numpy(self.learned_returns.copy()),
                "pool_ids": torch.tensor([seg[0] for seg in self.pool], dtype=torch.int64),
                "pool": [tuple(torch.from_numpy(x) for x in seg[1:]) for seg in self.pool],
                "fitter_ids": torch.tensor(list(self.fitter_row), dtype=torch.int64)}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output."""
        self.fitter.load_state_dict(state["fitter"])
        self.labeler.rng.bit_generator.state = state["labeler_rng"]
        self.rng.bit_generator.state = state["rng"]
        self.next_id, self.labels_used, self.trained = state["next_id"], state["labels_used"], state["trained"]
        self.learned_returns = state["learned_returns"].numpy().copy()
        self.pool = [(int(i), *(x.numpy().copy() for x in seg)) for i, seg in zip(state["pool_ids"], state["pool"])]
        self.fitter_row = {int(i): row for row, i in enumerate(state["fitter_ids"])}


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
