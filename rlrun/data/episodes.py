"""Whole episodes: the batch type of the Monte-Carlo and TD algorithms, how they are collected, and their
discounted and lambda-returns.

:class:`EpisodeBatch` lays M episodes end to end (REINFORCE's batch of trajectories, TD's trajectories).
:func:`collect_episodes` plays the first episodes to start after a reset (REINFORCE);
:class:`EpisodeCollector` gathers episodes from envs that step on without resets (TD).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch


@dataclass
class EpisodeBatch:
    """M whole episodes laid end to end, B steps in all.

    Attributes:
        obs: (B, *obs_shape) observations s_t (vectors, frames, or float32 features).
        actions: (B,) int64 or (B, A) float32 actions a_t (as sampled).
        rewards: (B,) float64 rewards r_t.
        terminated: (B,) bool, step t entered a terminal state: no bootstrap after it (at an episode's last
            step it ended the episode; inside one it is an Atari life loss).
        lengths: (M,) int64 steps of each episode, summing to B.
        truncated: (M,) bool, the episode was cut by a time limit (bootstrap from its final observation).
        final_obs: (M, *obs_shape) the observation after each episode's last action.
    """

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    lengths: np.ndarray
    truncated: np.ndarray
    final_obs: np.ndarray

    def __len__(self) -> int:
        """The number of episodes M."""
        return len(self.lengths)

    @property
    def bounds(self) -> np.ndarray:
        """(M + 1,) int64 offsets of the episodes in the step arrays: episode m is steps bounds[m]:bounds[m+1]."""
        return np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)

    @property
    def ends(self) -> np.ndarray:
        """(B,) bool, step t is the last of its episode."""
        ends = np.zeros(len(self.rewards), dtype=bool)
        ends[self.bounds[1:] - 1] = True
        return ends

    @property
    def next_obs(self) -> np.ndarray:
        """(B, *obs_shape) s_{t+1}: the next step's observation, or the episode's final one at its end."""
        out = np.concatenate([self.obs[1:], self.obs[:1]])
        out[self.bounds[1:] - 1] = self.final_obs
        return out

    @property
    def next_actions(self) -> np.ndarray:
        """(B,) int64 a_{t+1}, -1 at an episode's end."""
        out = np.append(self.actions[1:], -1).astype(np.int64)
        out[self.bounds[1:] - 1] = -1
        return out

    @classmethod
    def concatenate(cls, batches: Sequence[EpisodeBatch]) -> EpisodeBatch:
        """The episodes of ``batches``, in order."""
        return cls(*(np.concatenate([getattr(b, name) for b in batches]) for name in cls.__dataclass_fields__))

    @classmethod
    def episode(cls, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, final_obs: np.ndarray,
                terminated: bool) -> EpisodeBatch:
        """One episode of T steps: (T, ...) arrays, its (...) final observation, and whether it terminated
        (else a time limit cut it)."""
        ended = np.zeros(len(rewards), dtype=bool)
        ended[-1] = terminated
        return cls(obs, actions, np.asarray(rewards, np.float64), ended, np.array([len(rewards)], np.int64),
                   np.array([not terminated]), np.asarray(final_obs)[None])

    def episode_states(self) -> list[dict[str, Any]]:
        """One dict of tensors per episode (obs, actions, rewards, final_obs, terminated), for checkpoints."""
        b = self.bounds
        return [{"obs": torch.from_numpy(self.obs[b[m]:b[m + 1]].copy()),
                 "actions": torch.from_numpy(self.actions[b[m]:b[m + 1]].copy()),
                 "rewards": torch.from_numpy(self.rewards[b[m]:b[m + 1]].copy()),
                 "final_obs": torch.from_numpy(self.final_obs[m].copy()), "terminated": not bool(self.truncated[m])}
                for m in range(len(self))]

    @classmethod
    def from_episode_states(cls, states: list[dict[str, Any]]) -> EpisodeBatch:
        """Rebuild :meth:`episode_states`'s output (at least one episode)."""
        return cls.concatenate([cls.episode(s["obs"].numpy().copy(), s["actions"].numpy().copy(),
                                            s["rewards"].numpy().copy(), s["final_obs"].numpy().copy(),
                                            bool(s["terminated"])) for s in states])


def returns_to_go(rewards: Sequence[float] | np.ndarray, gamma: float, bootstrap: float = 0.0,
                  terminated: Sequence[bool] | np.ndarray | None = None) -> np.ndarray:
    """Discounted returns-to-go of one trajectory: G_t = sum_{i >= t} gamma^(i - t) r_i.

    Args:
        rewards: (T,) rewards r_0 .. r_{T-1}.
        gamma: discount in [0, 1].
        bootstrap: value of the state after the last step, added as gamma^(T - t) * bootstrap
            (V_phi of a time-limited episode's final observation; 0 for a terminated one).
        terminated: (T,) flags; the sum stops after a step flagged terminated (no bootstrap across it).

    Returns:
        (T,) float64 returns-to-go.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    cut = np.zeros(len(rewards), dtype=bool) if terminated is None else np.asarray(terminated, dtype=bool)
    out = np.empty_like(rewards)
    running = float(bootstrap)
    for t in range(len(rewards) - 1, -1, -1):
        running = float(rewards[t]) + gamma * (0.0 if cut[t] else running)
        out[t] = running
    return out


def lambda_returns(rewards: np.ndarray, next_values: np.ndarray, terminated: np.ndarray, end: np.ndarray,
                   gamma: float, td_lambda: float) -> np.ndarray:
    """Lambda-returns of trajectories laid end to end (Sutton and Barto 2018, eq. 12.18 in recursive form).

    Backwards within each trajectory:

        G_t = r_t + gamma * (1 - terminated_t) * [(1 - l_t) * next_values_t + l_t * G_{t+1}],

    where l_t = ``td_lambda`` inside a trajectory and 0 at its last step (a truncated end
    bootstraps from ``next_values``, a terminated one from nothing). ``td_lambda`` = 1 gives the
    discounted return-to-go (plus gamma^k times the bootstrap of a truncated end), 0 the one-step
    target r_t + gamma * next_values_t.

    Args:
        rewards: (n,) float64 r_t.
        next_values: (n,) float64 value of the successor s_{t+1} (V(s_{t+1}), or Q(s_{t+1}, a_{t+1})).
        terminated: (n,) bool, step t entered a terminal state.
        end: (n,) bool, step t is the last of its trajectory.
        gamma: discount in [0, 1]; td_lambda: in [0, 1].

    Returns:
        (n,) float64 targets.
    """
    n = len(rewards)
    if td_lambda == 0.0:
        return rewards + gamma * np.where(terminated, 0.0, next_values)
    out = np.empty(n)
    r, v, term, last = rewards.tolist(), next_values.tolist(), terminated.tolist(), end.tolist()
    following = 0.0
    for t in range(n - 1, -1, -1):
        if term[t]:
            g = r[t]
        elif last[t]:
            g = r[t] + gamma * v[t]
        else:
            g = r[t] + gamma * ((1.0 - td_lambda) * v[t] + td_lambda * following)
        out[t] = following = g
    return out


def collect_episodes(envs: Any, sample: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], episodes_wanted: int,
                     seed: int, steps_left: int, clip_rewards: bool
                     ) -> tuple[EpisodeBatch | None, int, list[tuple[int, float, int]]]:
    """Play the first ``episodes_wanted`` episodes to start after a reset of ``envs`` (a VecEnv) with ``seed``
    to their ends, choosing actions with ``sample``.

    An env that finishes a batch episode starts another one while fewer than ``episodes_wanted`` were
    started, and otherwise plays on unused until every batch episode has ended: choosing the episodes by
    start, never by end, keeps the batch free of a bias towards short episodes. Stops early after
    ``steps_left`` agent steps (the run's budget): unfinished episodes are dropped.

    Args:
        envs: N envs.
        sample: (N, *obs_shape) observations -> ((N, ...) actions as sampled, (N, ...) actions to apply,
            e.g. clipped to the action space).
        clip_rewards: store sign(r) (Atari) instead of r.

    Returns:
        (the batch, or None if no episode finished; agent steps taken, all envs;
        [(steps taken when it ended, raw return, length)] of each batch episode, in order of ending).
    """
    num_envs = envs.num_envs
    obs = envs.reset(seed=seed)
    episode_of = np.full(num_envs, -1, dtype=np.int64)  # batch episode each env plays, -1 = surplus
    first = min(num_envs, episodes_wanted)
    episode_of[:first] = np.arange(first)
    started, running = first, first
    obs_steps, action_steps, reward_steps, term_steps, id_steps = [], [], [], [], []
    finals: dict[int, tuple[bool, np.ndarray]] = {}
    ended: list[tuple[int, float, int]] = []
    steps = 0
    while running > 0 and steps < steps_left:
        sampled, applied = sample(obs)
        result = envs.step(applied)
        steps += num_envs
        obs_steps.append(obs)
        action_steps.append(sampled)
        reward_steps.append(np.sign(result.reward) if clip_rewards else result.reward)
        term_steps.append(result.terminated)
        id_steps.append(episode_of.copy())
        for i, (ret, length) in zip(np.flatnonzero(result.episode_end), result.episodes):
            m = int(episode_of[i])
            if m < 0:
                continue  # a surplus episode: not part of the batch
            finals[m] = (bool(result.truncated[i] and not result.terminated[i]), result.final_obs[i])
            ended.append((steps, ret, length))
            running -= 1
            if started < episodes_wanted:
                episode_of[i] = started
                started += 1
                running += 1
            else:
                episode_of[i] = -1
        obs = result.obs
    if not finals:
        return None, steps, ended
    # flatten time-major and group the steps of each complete batch episode, in time order
    ids = np.stack(id_steps).reshape(-1)
    complete = np.isin(ids, list(finals))
    order = np.flatnonzero(complete)
    order = order[np.argsort(ids[order], kind="stable")]
    episode_ids = sorted(finals)
    obs_all = np.stack(obs_steps)
    batch = EpisodeBatch(
        obs=obs_all.reshape(-1, *obs_all.shape[2:])[order],
        actions=np.stack(action_steps).reshape(-1, *action_steps[0].shape[1:])[order],
        rewards=np.stack(reward_steps).astype(np.float64).reshape(-1)[order],
        terminated=np.stack(term_steps).reshape(-1)[order],
        lengths=np.bincount(ids[order], minlength=max(episode_ids) + 1)[episode_ids],
        truncated=np.array([finals[m][0] for m in episode_ids]),
        final_obs=np.stack([finals[m][1] for m in episode_ids]),
    )
    return batch, steps, ended


class EpisodeCollector:
    """The steps of N envs that step on (no resets between batches), gathered into whole episodes.

    Each env's running episode grows step by step; when it ends it joins :attr:`finished` (one-episode
    batches, in order of ending). Checkpoints hold both (``batch``: one dict per finished episode,
    ``partial``: the running ones).

    Args:
        num_envs: N.
        features: D, the width of the (float32) observation features stored.
    """

    flat_state = True

    def __init__(self, num_envs: int, features: int):
        self.features = features
        self.finished: list[EpisodeBatch] = []
        self.partial: list[dict[str, list]] = [self._new() for _ in range(num_envs)]

    @staticmethod
    def _new() -> dict[str, list]:
        return {"obs": [], "actions": [], "rewards": []}

    def add(self, features: np.ndarray, actions: np.ndarray, rewards: np.ndarray, episode_end: np.ndarray,
            terminated: np.ndarray, final_features: Callable[[int], np.ndarray]) -> None:
        """Record one step of every env: (N, D) features of the observations acted in, (N,) actions, (N,)
        rewards, (N,) episode ends and terminated flags; ``final_features(i)`` gives the (D,) features of
        env i's final observation where its episode ended."""
        for i, p in enumerate(self.partial):
            p["obs"].append(features[i])
            p["actions"].append(int(actions[i]))
            p["rewards"].append(float(rewards[i]))
            if episode_end[i]:
                episode = EpisodeBatch.episode(np.stack(p["obs"]), np.asarray(p["actions"], dtype=np.int64),
                                               np.asarray(p["rewards"], dtype=np.float64), final_features(i),
                                               bool(terminated[i]))
                self.finished.append(episode)
                self.partial[i] = self._new()

    def take(self, m: int) -> EpisodeBatch:
        """Remove and return the first ``m`` finished episodes, as one batch."""
        batch = EpisodeBatch.concatenate(self.finished[:m])
        del self.finished[:m]
        return batch

    def drop_partial(self) -> None:
        """Forget the running episodes (their envs were reset out of turn, e.g. on resuming an ALE run)."""
        self.partial = [self._new() for _ in self.partial]

    def state_dict(self) -> dict[str, Any]:
        """``batch`` and ``partial`` as tensors and plain values."""
        def partial_state(p: dict) -> dict:
            obs = np.asarray(p["obs"], dtype=np.float32).reshape(len(p["obs"]), self.features)
            return {"obs": torch.from_numpy(obs), "actions": torch.tensor(p["actions"], dtype=torch.int64),
                    "rewards": torch.tensor(p["rewards"], dtype=torch.float64)}

        return {"batch": [state for episode in self.finished for state in episode.episode_states()],
                "partial": [partial_state(p) for p in self.partial]}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output from a checkpoint."""
        self.finished = [EpisodeBatch.from_episode_states([state]) for state in checkpoint["batch"]]
        self.partial = [{"obs": list(p["obs"].numpy()), "actions": p["actions"].tolist(),
                         "rewards": p["rewards"].tolist()} for p in checkpoint["partial"]]

