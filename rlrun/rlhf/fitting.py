"""Fitting reward ensembles to labelled pairs of segments: Christiano et al. 2017 ("Deep reinforcement
learning from human preferences", NeurIPS), section 2.2.3, with the Bradley-Terry loss of
rlrun.rlhf.preferences; the config keys every reward-model fit shares."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from rlrun.core.config import check_bool, check_choice, check_int, check_int_list, check_number
from rlrun.rlhf.preferences import preference_loss
from rlrun.rlhf.reward_models import SHIFTS, RewardEnsemble, RewardNet


class PreferenceFitter:
    """Fits a :class:`RewardEnsemble` to labelled pairs of segments (Christiano et al. 2017, 2.2.3).

    Holds the labelled data: segment arrays (M, L, ...) (next observations too, for r(s, a, s')) and (P, 2) pairs of their rows with (P,) labels.
    Each member gets its own bootstrap sample of the pairs (drawn anew at every :meth:`fit`) and its own
    minibatches; one AdamW step updates all members on the sum of their losses.

    Args:
        ensemble: the model to fit (its device is used).
        learning_rate, weight_decay: AdamW settings.
        batch_size: pairs per member per gradient step.
        random_answer_prob, margin, center_coef: see :func:`rlrun.rlhf.preferences.preference_loss`.
        bootstrap: resample pairs per member (else every member sees every pair).
        seed: seed of the minibatch and bootstrap generator.
        shift: "mean" or "min", see :meth:`RewardEnsemble.fit_normalization`.
    """

    def __init__(self, ensemble: RewardEnsemble, learning_rate: float, weight_decay: float, batch_size: int,
                 random_answer_prob: float, margin: float, center_coef: float, bootstrap: bool, seed: int,
                 shift: str = "mean"):
        self.ensemble, self.shift = ensemble, shift
        self.optimizer = torch.optim.AdamW(ensemble.parameters(), lr=learning_rate, weight_decay=weight_decay)
        self.batch_size, self.bootstrap = batch_size, bootstrap
        self.loss_args = {"random_answer_prob": random_answer_prob, "margin": margin, "center_coef": center_coef}
        self.rng = np.random.default_rng(seed)
        self.obs: np.ndarray | None = None
        self.actions: np.ndarray | None = None
        self.next_obs: np.ndarray | None = None
        self.pairs = np.zeros((0, 2), np.int64)
        self.labels = np.zeros(0, np.float32)
        self.samples: list[np.ndarray] = []

    def add(self, obs: np.ndarray, actions: np.ndarray, pairs: np.ndarray, labels: np.ndarray,
            next_obs: np.ndarray | None = None) -> None:
        """Append segments ((S, L, *obs_shape), (S, L, ...), and (S, L, *obs_shape) next observations for
        r(s, a, s')) and (P, 2) labelled pairs of rows of the stored segments, the new ones included (they
        follow the old ones).

        Raises:
            ValueError: if the model reads next observations and ``next_obs`` is None.
        """
        if self.ensemble.use_next_obs:
            if next_obs is None:
                raise ValueError("this reward model is r(s, a, s'): pass the segments' next observations")
            self.next_obs = next_obs.copy() if self.next_obs is None else np.concatenate([self.next_obs, next_obs])
        self.obs = obs.copy() if self.obs is None else np.concatenate([self.obs, obs])
        self.actions = actions.copy() if self.actions is None else np.concatenate([self.actions, actions])
        self.pairs = np.concatenate([self.pairs, np.asarray(pairs, np.int64)])
        self.samples = []  # the members' samples are drawn anew, over all pairs, at the next fit
        self.labels = np.concatenate([self.labels, np.asarray(labels, np.float32)])

    def resample(self) -> None:
        """Draw each member's training sample of the pairs (a bootstrap sample, or all of them)."""
        n = len(self.pairs)
        self.samples = [self.rng.integers(0, n, n) if self.bootstrap else np.arange(n)
                        for _ in range(len(self.ensemble.members))]

    def fit(self, epochs: int) -> float:
        """Train ``epochs`` passes over the members' samples (drawn by :meth:`resample` after pairs were
        added), then refit the normalization; returns the last epoch's mean loss per member and pair."""
        ensemble = self.ensemble
        ensemble.fit_obs_normalization(self.obs.reshape(-1, *self.obs.shape[2:]))
        if not self.samples:
            self.resample()
        samples, n, k = self.samples, len(self.pairs), len(ensemble.members)
        device = ensemble.obs_mean.device
        labels = torch.as_tensor(self.labels, device=device)
        ensemble.train()
        loss_sum, count = 0.0, 0
        for _ in range(epochs):
            orders = [self.rng.permutation(sample) for sample in samples]
            loss_sum, count = 0.0, 0
            for start in range(0, n, self.batch_size):
                loss = 0.0
                for member, order in zip(ensemble.members, orders):
                    batch = order[start:start + self.batch_size]
                    a, b = self.pairs[batch, 0], self.pairs[batch, 1]
                    returns = self.member_returns(member, np.concatenate([a, b]))
                    loss = loss + preference_loss(returns[:len(batch)], returns[len(batch):], labels[batch],
                                                  **self.loss_args)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                loss_sum, count = loss_sum + loss.item() / k, count + 1
        ensemble.eval()
        flat = [None if x is None else x.reshape(-1, *x.shape[2:]) for x in (self.obs, self.actions, self.next_obs)]
        ensemble.fit_normalization(*flat, shift=self.shift)
        return loss_sum / max(count, 1)

    def member_returns(self, member: RewardNet, rows: np.ndarray) -> torch.Tensor:
        """(len(rows),) returns of stored segments under one member, with gradient."""
        m, length = len(rows), self.obs.shape[1]
        flat = [None if x is None else x[rows].reshape(m * length, *x.shape[2:])
                for x in (self.obs, self.actions, self.next_obs)]
        return member(*self.ensemble.inputs(*flat)).reshape(m, length).sum(-1)

    def state_dict(self) -> dict:
        """Model, optimizer, generator and labelled data, for a checkpoint (tensors and plain values)."""
        return {"ensemble": self.ensemble.state_dict(), "optimizer": self.optimizer.state_dict(),
                "rng": self.rng.bit_generator.state,
                "obs": None if self.obs is None else torch.from_numpy(self.obs),
                "actions": None if self.actions is None else torch.from_numpy(self.actions),
                "next_obs": None if self.next_obs is None else torch.from_numpy(self.next_obs),
                "pairs": torch.from_numpy(self.pairs), "labels": torch.from_numpy(self.labels),
                "samples": [torch.from_numpy(sample) for sample in self.samples]}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output."""
        self.ensemble.load_state_dict(state["ensemble"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.bit_generator.state = state["rng"]
        self.obs = None if state["obs"] is None else state["obs"].numpy().copy()
        self.actions = None if state["actions"] is None else state["actions"].numpy().copy()
        next_obs = state.get("next_obs")  # absent in checkpoints from before r(s, a, s')
        self.next_obs = None if next_obs is None else next_obs.numpy().copy()
        self.pairs, self.labels = state["pairs"].numpy().copy(), state["labels"].numpy().copy()
        self.samples = [sample.numpy().copy() for sample in state["samples"]]


def evaluate_pairs(ensemble: RewardEnsemble, obs: np.ndarray, actions: np.ndarray, pairs: np.ndarray,
                   labels: np.ndarray, random_answer_prob: float, next_obs: np.ndarray | None = None
                   ) -> dict[str, float]:
    """Held-out statistics of labelled pairs under the ensemble mean.

    Args:
        obs, actions (and next_obs, for r(s, a, s')): (M, L, ...) segments; pairs: (P, 2) rows of them; labels: (P,) in {0, 0.5, 1}.

    Returns:
        accuracy (share of strict pairs whose preferred segment has the higher predicted return; nan if
        none), loss (Bradley-Terry cross-entropy with ``random_answer_prob``) and margin (mean predicted
        return of the preferred segment minus the other's, strict pairs).
    """
    with torch.no_grad():
        returns = ensemble.segment_returns(*(None if x is None else torch.as_tensor(x)
                                             for x in (obs, actions, next_obs))).mean(0).double()
    a, b = returns[pairs[:, 0]], returns[pairs[:, 1]]
    labels_t = torch.as_tensor(labels, dtype=torch.float64)
    loss = preference_loss(a, b, labels_t, random_answer_prob=random_answer_prob).item()
    strict = labels != 0.5
    if not strict.any():
        return {"accuracy": float("nan"), "loss": loss, "margin": float("nan")}
    sign = torch.as_tensor(np.where(labels[strict] == 1.0, 1.0, -1.0))
    diff = (a - b)[torch.as_tensor(strict)] * sign
    return {"accuracy": float((diff > 0).double().mean()), "loss": loss, "margin": float(diff.mean())}


def validate_model_keys(cfg, prefix: str) -> None:
    """Check the reward-model keys under ``prefix`` (``algo.`` for algo=reward_model, ``algo.reward_model.``
    for algo=pbrl): the ensemble's architecture and the Bradley-Terry training settings.

    Raises:
        ConfigError: naming the key, the value and what is allowed.
    """
    check_int_list(cfg, prefix + "hidden_sizes", allow_empty=True)
    check_choice(cfg, prefix + "activation", ["relu", "tanh"])
    check_int(cfg, prefix + "ensemble_size", low=1)
    check_bool(cfg, prefix + "use_actions")
    check_bool(cfg, prefix + "use_next_obs")
    check_choice(cfg, prefix + "shift", list(SHIFTS))
    check_bool(cfg, prefix + "bootstrap")
    check_number(cfg, prefix + "random_answer_prob", low=0, high=1, high_open=True)
    check_number(cfg, prefix + "margin", low=0)
    check_number(cfg, prefix + "center_coef", low=0)
    check_number(cfg, prefix + "learning_rate", low=0, low_open=True)
    check_number(cfg, prefix + "weight_decay", low=0)
    check_int(cfg, prefix + "batch_size", low=1)


def fitter_from_config(node, obs_shape: tuple[int, ...], action_space: gym.Space, device: torch.device,
                       seed: int) -> PreferenceFitter:
    """A new ensemble for ``obs_shape`` and ``action_space`` on ``device`` and its PreferenceFitter, from the
    keys of ``node`` (the config node :func:`validate_model_keys` checked)."""
    ensemble = RewardEnsemble(obs_shape, action_space, list(node.hidden_sizes), node.activation,
                              int(node.ensemble_size), bool(node.use_actions), bool(node.use_next_obs),
                              init_seed=seed).to(device)
    return PreferenceFitter(ensemble, float(node.learning_rate), float(node.weight_decay), int(node.batch_size),
                            float(node.random_answer_prob), float(node.margin), float(node.center_coef),
                            bool(node.bootstrap), seed=seed, shift=str(node.shift))
