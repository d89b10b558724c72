"""Demonstrations: whole episodes of (observation, action) from an expert, on disk and in memory.

The file is a NumPy ``.npz`` archive (``numpy.load(path)`` reads it without rlrun) with these entries:

    format           int, DEMOS_FORMAT (bumped when the layout changes incompatibly)
    kind             "demonstrations"
    env_id           the gymnasium id or ALE game the episodes were played on
    obs              (N, *obs_shape) observations the actions were taken in, the E episodes one after the
                     other (Discrete observation spaces: (N,) int64 state indices)
    actions          (N,) int64 (Discrete actions) or (N, A) float32 (Box actions)
    rewards          (N,) float32 true rewards of the steps
    episode_lengths  (E,) int64 steps of each episode, summing to N
    obs_n            int, n of a Discrete observation space; -1 for arrays
    action_n         int, n of a Discrete action space; -1 for Box actions
    source           what played them, in words (a checkpoint path, "expert", ...)

Written by ``rlrun-eval <run dir> --save-demos demos.npz`` from any checkpoint (for tabular envs the
optimal expert is a value-iteration checkpoint, the soft-optimal one ``algo.soft=true``), and read by
``algo=maxent_irl``, ``algo=bc`` and ``algo=dagger`` (``algo.demos``); :func:`load_demos` validates the
file and :func:`check_demos` its fit to an env.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from rlrun.core.config import ConfigError

DEMOS_FORMAT = 1  # bumped when the demonstrations layout changes incompatibly
ARRAYS = ("obs", "actions", "rewards", "episode_lengths")


@dataclass
class Demos:
    """E episodes, N steps in all (see the module docstring for the arrays)."""

    env_id: str
    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    episode_lengths: np.ndarray
    obs_n: int = -1
    action_n: int = -1
    source: str = ""

    @property
    def num_episodes(self) -> int:
        return len(self.episode_lengths)

    @property
    def episode_starts(self) -> np.ndarray:
        """(E,) int64 index in ``obs`` of each episode's first step."""
        return np.concatenate([[0], np.cumsum(self.episode_lengths)[:-1]]).astype(np.int64)

    def returns(self) -> np.ndarray:
        """(E,) float64 true return of each episode."""
        return np.add.reduceat(self.rewards.astype(np.float64), self.episode_starts) if len(self.rewards) else \
            np.zeros(0)

    def episodes(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """[(obs (T_i, ...), actions (T_i, ...))] of each episode."""
        bounds = np.cumsum(self.episode_lengths)
        return [(self.obs[b - n:b], self.actions[b - n:b]) for b, n in zip(bounds, self.episode_lengths)]


def space_n(space: gym.Space) -> int:
    """n of a Discrete space, -1 otherwise."""
    return int(space.n) if isinstance(space, spaces.Discrete) else -1


class DemoRecorder:
    """Collects the steps of one env (num_envs = 1) into :class:`Demos`; only finished episodes are kept."""

    def __init__(self, env_id: str, obs_space: gym.Space, action_space: gym.Space, source: str):
        self.env_id, self.source = env_id, source
        self.obs_n, self.action_n = space_n(obs_space), space_n(action_space)
        self.obs: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.rewards: list[float] = []
        self.lengths: list[int] = []
        self._open = 0  # steps of the episode in progress

    def add(self, obs: np.ndarray, actions: np.ndarray, reward: float, episode_end: bool) -> None:
        """Record one step: (1, *obs_shape) observation acted in, (1, ...) action, its true reward, whether
        the episode ended with it."""
        self.obs.append(np.asarray(obs)[0].copy())
        self.actions.append(np.asarray(actions)[0].copy())
        self.rewards.append(float(reward))
        self._open += 1
        if episode_end:
            self.lengths.append(self._open)
            self._open = 0

    def demos(self) -> Demos:
        n = sum(self.lengths)
        obs = np.stack(self.obs[:n]) if n else np.zeros((0,))
        actions = np.stack(self.actions[:n]) if n else np.zeros((0,))
        obs = obs.astype(np.int64) if self.obs_n >= 0 else obs
        actions = actions.astype(np.int64) if self.action_n >= 0 else actions.astype(np.float32)
        return Demos(self.env_id, obs, actions, np.asarray(self.rewards[:n], np.float32),
                     np.asarray(self.lengths, np.int64), self.obs_n, self.action_n, self.source)


def save_demos(demos: Demos, path: str | Path) -> Path:
    """Write ``demos`` to ``path`` (.npz) atomically; returns the path."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp_{path.name}")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, format=DEMOS_FORMAT, kind="demonstrations", env_id=demos.env_id, obs=demos.obs,
                            actions=demos.actions, rewards=demos.rewards, episode_lengths=demos.episode_lengths,
                            obs_n=demos.obs_n, action_n=demos.action_n, source=demos.source)
    tmp.replace(path)
    return path


def load_demos(path: str | Path, key: str = "algo.demos") -> Demos:
    """Read and validate a demonstrations file written by :func:`save_demos`.

    Raises:
        ConfigError: naming ``key`` and the file, if it is missing, unreadable, not demonstrations, of
            another format, or inconsistent (missing arrays, lengths that do not add up, steps without an
            action, non-finite values, actions outside their space).
    """
    path = Path(path)

    def bad(what: str) -> ConfigError:
        return ConfigError(f"{key}={str(path)!r} {what}")

    if not path.is_file():
        raise bad("is not a file: expected a demonstrations .npz written by rlrun-eval --save-demos")
    if not zipfile.is_zipfile(path):
        raise bad("is not an .npz archive: expected a demonstrations file written by rlrun-eval --save-demos")
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise bad(f"cannot be read as demonstrations: {type(exc).__name__}: {str(exc)[:200]}") from None
    if str(data.get("kind", "")) != "demonstrations":
        raise bad("is not a demonstrations file (no kind=demonstrations): expected one written by "
                  "rlrun-eval --save-demos")
    if int(data.get("format", -1)) != DEMOS_FORMAT:
        raise bad(f"has demonstrations format {data.get('format')}: this rlrun reads format {DEMOS_FORMAT}")
    missing = [k for k in (*ARRAYS, "env_id", "obs_n", "action_n") if k not in data]
    if missing:
        raise bad(f"lacks the entries {missing}: expected {list(ARRAYS)} with env_id, obs_n and action_n")
    demos = Demos(str(data["env_id"]), data["obs"], data["actions"], data["rewards"], data["episode_lengths"],
                  int(data["obs_n"]), int(data["action_n"]), str(data.get("source", "")))
    lengths, n = demos.episode_lengths, len(demos.obs)
    if lengths.ndim != 1 or len(lengths) == 0 or lengths.dtype.kind not in "iu" or (lengths < 1).any():
        raise bad(f"has episode_lengths {lengths[:5]}...: expected at least one episode, each of at least one step")
    if int(lengths.sum()) != n or len(demos.actions) != n or len(demos.rewards) != n:
        raise bad(f"has {n} observations, {len(demos.actions)} actions and {len(demos.rewards)} rewards for "
                  f"episodes of {int(lengths.sum())} steps in all: expected one of each per step")
    for name in ("obs", "actions", "rewards"):
        values = getattr(demos, name)
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise bad(f"has non-finite {name}: expected finite numbers")
    for name, values, size in (("obs", demos.obs, demos.obs_n), ("actions", demos.actions, demos.action_n)):
        if size >= 0 and (values.ndim != 1 or values.dtype.kind not in "iu" or values.min() < 0 or values.max() >= size):
            raise bad(f"has {name} outside Discrete({size}) (shape {values.shape}, range "
                      f"{values.min()}..{values.max()}): expected integers 0..{size - 1}")
    return demos


def check_demos(demos: Demos, obs_space: gym.Space, action_space: gym.Space, env_id: str,
                key: str = "algo.demos") -> None:
    """Refuse demonstrations from another env or whose observation or action shapes differ from the env's.

    Raises:
        ConfigError: naming ``key``, both envs or both shapes.
    """
    if demos.env_id != env_id:
        raise ConfigError(f"{key}: the demonstrations were played on {demos.env_id} but this run's env is {env_id}: "
                          "expected demonstrations of the same env")

    def describe(n: int, shape: tuple) -> str:
        return f"Discrete({n})" if n >= 0 else f"arrays of shape {shape}"

    for what, values, n, space in (("observations", demos.obs, demos.obs_n, obs_space),
                                   ("actions", demos.actions, demos.action_n, action_space)):
        env_n, env_shape = space_n(space), tuple(space.shape or ())
        shape = tuple(values.shape[1:])
        if n != env_n or (n < 0 and shape != env_shape):
            raise ConfigError(f"{key}: the demonstrations' {what} are {describe(n, shape)} but {env_id} has "
                              f"{describe(env_n, env_shape)}: expected demonstrations recorded with the same "
                              "env settings")


class ExpertDataset:
    """(observation, expert action) pairs, aggregated batch by batch, each pair in the training or the
    held-out split for good.

    Of each batch added, ``floor(holdout_fraction * n)`` steps drawn uniformly (a generator seeded by
    ``(seed, number of batches added before)``, so that the split needs no saved state) are held out.

    Attributes:
        obs: (N, *obs_shape) observations (as given: float32 vectors, uint8 frames or int64 indices).
        actions: (N,) int64 or (N, A) float32 expert actions.
        holdout: (N,) bool, True for held-out steps.
    """

    def __init__(self, holdout_fraction: float, seed: int):
        self.holdout_fraction, self.seed = holdout_fraction, seed
        self.obs: torch.Tensor | None = None
        self.actions: torch.Tensor | None = None
        self.holdout = torch.zeros(0, dtype=torch.bool)
        self.batches = 0

    def __len__(self) -> int:
        return len(self.holdout)

    def add(self, obs: np.ndarray, actions: np.ndarray) -> None:
        """Append n steps: (n, *obs_shape) observations and (n,) or (n, A) expert actions."""
        n = len(obs)
        rng = np.random.default_rng((self.seed, self.batches))
        held = np.zeros(n, dtype=bool)
        held[rng.permutation(n)[:int(self.holdout_fraction * n)]] = True
        obs, actions = torch.as_tensor(np.asarray(obs)), torch.as_tensor(np.asarray(actions))
        self.obs = obs if self.obs is None else torch.cat([self.obs, obs])
        self.actions = actions if self.actions is None else torch.cat([self.actions, actions])
        self.holdout = torch.cat([self.holdout, torch.from_numpy(held)])
        self.batches += 1

    def split(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(training observations, training actions, held-out observations, held-out actions) on ``device``."""
        keep = ~self.holdout
        return (self.obs[keep].to(device), self.actions[keep].to(device),
                self.obs[self.holdout].to(device), self.actions[self.holdout].to(device))

    def state_dict(self) -> dict[str, Any]:
        """The data as tensors, for checkpoints."""
        return {"obs": self.obs, "actions": self.actions, "holdout": self.holdout, "batches": self.batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (the split and the count of batches included)."""
        self.obs, self.actions, self.holdout = state["obs"], state["actions"], state["holdout"]
        self.batches = int(state["batches"])
