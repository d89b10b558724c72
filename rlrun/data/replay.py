"""Uniform experience replay (Lin 1992; Mnih et al. 2015, Nature 518:529).

One ring buffer serves pixel and vector observations. Each slot (t, e) holds the
*newest frame* of the observation that env e saw at time t, with the action,
reward and terminated flag of the transition taken from it. A frame-stacked
observation ``(K, 84, 84)`` is rebuilt at sampling time from the slots t-K+1..t
of the same env, so every 84x84 frame is stored once: 1M Atari transitions take
1M x 7,056 B = 7.1 GB instead of 28.2 GB for stacked observations (56.4 GB with
a stored successor for each). Vector observations use the same code with K = 1.

Stacks are rebuilt exactly as the env built them:

* at a reset the env's stack is zero-padded ([0, 0, 0, f0], as AtariVectorEnv
  does), so frames from before an episode start are masked to zero;
* a lost life is ``terminated`` for learning but the stack continues, so only
  real episode starts mask;
* the successor of slot t is the stack at slot t+1, except after an episode end
  (the env was reset), where it is rebuilt with the episode's final frame, kept
  in a small side table until its slot is overwritten.

A slot is sampled only if its stack and its successor are complete and not
overwritten: not the newest slot of its env (successor not yet seen) and not one
of the K-1 oldest slots once the ring has wrapped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class TransitionBatch:
    """A sampled minibatch. B = batch size.

    Attributes:
        obs: (B, *obs_shape) observations, stored dtype (uint8 frames or float32 vectors).
        actions: (B, *action_shape) actions.
        rewards: (B,) float32 rewards as stored (clip before adding if wanted).
        next_obs: (B, *obs_shape) successor observations.
        terminated: (B,) float32, 1.0 where the transition ended in a terminal state.
    """

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray


class ReplayBuffer:
    """Ring buffer of transitions from ``num_envs`` envs stepped in lockstep.

    Args:
        capacity: transitions kept in total (rounded down to a multiple of num_envs;
            must be at least ``num_envs * (frame_stack + 1)``).
        obs_shape: shape of one observation, e.g. (4, 84, 84) or (4,).
        obs_dtype: dtype of observations (uint8 for frames, float32 for vectors).
        action_shape: shape of one action, () for discrete.
        action_dtype: dtype of actions.
        num_envs: number of envs N whose steps arrive together in ``add``.
        frame_stack: K, the leading axis of ``obs_shape`` that holds stacked frames;
            1 stores observations as they are.
        seed: seed of the sampler's NumPy generator.

    Raises:
        ValueError: if the capacity is too small or ``obs_shape`` does not start with K.
    """

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], obs_dtype: np.dtype,
                 action_shape: tuple[int, ...] = (), action_dtype: np.dtype = np.int64,
                 num_envs: int = 1, frame_stack: int = 1, seed: int = 0):
        self.num_envs = num_envs
        self.frame_stack = frame_stack
        self.size_per_env = capacity // num_envs
        if self.size_per_env < frame_stack + 1:
            raise ValueError(f"replay capacity {capacity} is too small for {num_envs} envs with "
                             f"frame_stack {frame_stack}: need at least {num_envs * (frame_stack + 1)}")
        if frame_stack > 1 and (len(obs_shape) < 2 or obs_shape[0] != frame_stack):
            raise ValueError(f"obs_shape {obs_shape} must start with frame_stack={frame_stack}")
        self.obs_shape = tuple(obs_shape)
        self.frame_shape = self.obs_shape[1:] if frame_stack > 1 else self.obs_shape
        n, m = self.size_per_env, num_envs
        self.frames = np.zeros((n, m, *self.frame_shape), dtype=obs_dtype)
        self.actions = np.zeros((n, m, *action_shape), dtype=action_dtype)
        self.rewards = np.zeros((n, m), dtype=np.float32)
        self.terminated = np.zeros((n, m), dtype=np.float32)
        self.episode_start = np.zeros((n, m), dtype=bool)  # slot holds the first obs of an episode
        self.episode_end = np.zeros((n, m), dtype=bool)    # the env reset after this slot's transition
        self.final_frames: dict[tuple[int, int], np.ndarray] = {}  # (t, e) -> last frame of an episode
        self.pos = 0          # next slot index t to write
        self.full = False
        self._next_is_start = np.ones(m, dtype=bool)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        """Number of slots written (each holds one transition once its successor arrives)."""
        return (self.size_per_env if self.full else self.pos) * self.num_envs

    def add(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, terminated: np.ndarray,
            episode_end: np.ndarray, final_obs: np.ndarray) -> None:
        """Store one step of every env.

        Args:
            obs: (N, *obs_shape) observations the actions were taken in.
            actions: (N, *action_shape) actions taken.
            rewards: (N,) rewards received (already clipped if clipping is wanted).
            terminated: (N,) bool, no bootstrapping from the successor.
            episode_end: (N,) bool, the env reset after this step, so the next ``obs``
                starts a new episode and the successor is ``final_obs``.
            final_obs: (N, *obs_shape) last observation of the ended episodes (read
                only where ``episode_end``).
        """
        t = self.pos
        for e in np.flatnonzero(self.episode_end[t]):  # the slot is reused: forget its old episode end
            del self.final_frames[(t, int(e))]
        self.frames[t] = obs[:, -1] if self.frame_stack > 1 else obs
        self.actions[t] = actions
        self.rewards[t] = rewards
        self.terminated[t] = terminated
        self.episode_start[t] = self._next_is_start
        self.episode_end[t] = episode_end
        for e in np.flatnonzero(episode_end):
            self.final_frames[(t, int(e))] = np.array(final_obs[e][-1] if self.frame_stack > 1 else final_obs[e])
        self._next_is_start = np.asarray(episode_end, dtype=bool).copy()
        self.pos = (t + 1) % self.size_per_env
        self.full = self.full or self.pos == 0

    def valid_slots(self) -> tuple[int, int]:
        """Sampleable slot indices t as ``(first, count)``: t = (first + i) % size_per_env, 0 <= i < count.

        Excludes the newest slot (its successor is not stored yet) and, once the ring
        has wrapped, the K-1 oldest slots (their stacks reach overwritten frames).
        """
        k = self.frame_stack
        if not self.full:
            return 0, max(self.pos - 1, 0)
        return self.pos + k - 1, self.size_per_env - k

    def sample(self, batch_size: int) -> TransitionBatch:
        """Sample ``batch_size`` transitions uniformly (with replacement) over envs and valid slots.

        Raises:
            ValueError: if no complete transition is stored yet.
        """
        first, count = self.valid_slots()
        if count <= 0:
            raise ValueError("the replay buffer holds no complete transition yet")
        t = (first + self.rng.integers(0, count, size=batch_size)) % self.size_per_env
        e = self.rng.integers(0, self.num_envs, size=batch_size)
        return self.gather(t, e)

    def gather(self, t: np.ndarray, e: np.ndarray) -> TransitionBatch:
        """The transitions at slots ``t`` (B,) of envs ``e`` (B,), which must be valid slots."""
        obs = self._stack(t, e)
        next_obs = self._stack((t + 1) % self.size_per_env, e)
        for i in np.flatnonzero(self.episode_end[t, e]):
            # the successor of an episode's last step is its final observation, not the next episode's first
            final = self.final_frames[(int(t[i]), int(e[i]))]
            if self.frame_stack > 1:
                next_obs[i, :-1] = obs[i, 1:]
                next_obs[i, -1] = final
            else:
                next_obs[i] = final
        return TransitionBatch(obs, self.actions[t, e], self.rewards[t, e], next_obs, self.terminated[t, e])

    def _stack(self, t: np.ndarray, e: np.ndarray) -> np.ndarray:
        """Rebuild observations (B, *obs_shape) at slots t of envs e, zeroing frames before episode starts."""
        k, n = self.frame_stack, self.size_per_env
        if k == 1:
            return self.frames[t, e]
        offsets = np.arange(-(k - 1), 1)                     # (K,) = -3..0
        idx = (t[:, None] + offsets[None, :]) % n            # (B, K)
        out = self.frames[idx, e[:, None]]                   # (B, K, H, W)
        # A start at slot t-j (0 <= j < K-1) masks every frame older than t-j.
        starts = self.episode_start[idx[:, 1:], e[:, None]]  # (B, K-1): starts at t-K+2 .. t
        # later_start[:, i]: some episode starts after frame i (cumulative OR from the right).
        later_start = np.flip(np.logical_or.accumulate(np.flip(starts, axis=1), axis=1), axis=1)
        out[:, :-1][later_start] = 0
        return out

    ARRAYS = ("frames", "actions", "rewards", "terminated", "episode_start", "episode_end")

    def save(self, directory: str | Path) -> None:
        """Write the buffer into ``directory`` (created) as plain ``.npy`` arrays: no pickles, so
        loading it runs no code. The caller makes the directory appear atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True)
        for name in self.ARRAYS:
            np.save(directory / f"{name}.npy", getattr(self, name))
        keys = sorted(self.final_frames)
        np.save(directory / "final_keys.npy", np.array(keys, dtype=np.int64).reshape(len(keys), 2))
        np.save(directory / "final_frames.npy", np.stack([self.final_frames[k] for k in keys]) if keys
                else np.zeros((0, *self.frame_shape), self.frames.dtype))
        np.save(directory / "cursor.npy", np.array([self.pos, int(self.full)], dtype=np.int64))
        np.save(directory / "next_is_start.npy", self._next_is_start)

    def load(self, directory: str | Path) -> None:
        """Fill this buffer from :meth:`save`'s output (``allow_pickle=False``; the big arrays are
        memory-mapped and copied in place, so loading needs no second copy in RAM).

        Raises:
            ValueError: if a file is missing, unreadable, or its shape or dtype does not match this buffer.
        """
        directory = Path(directory)

        def read(name: str, like: np.ndarray | None = None, mmap: bool = False) -> np.ndarray:
            try:
                array = np.load(directory / f"{name}.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
            except Exception as exc:
                raise ValueError(f"replay snapshot {directory}: cannot read {name}.npy ({exc})") from None
            if like is not None and (array.shape != like.shape or array.dtype != like.dtype):
                raise ValueError(f"replay snapshot {directory}: {name}.npy has shape {array.shape} {array.dtype}, "
                                 f"this buffer needs {like.shape} {like.dtype}")
            return array

        for name in self.ARRAYS:
            getattr(self, name)[...] = read(name, getattr(self, name), mmap=True)
        keys, finals = read("final_keys"), read("final_frames")
        if len(keys) != len(finals) or finals.shape[1:] != self.frame_shape:
            raise ValueError(f"replay snapshot {directory}: final_keys and final_frames do not match")
        self.final_frames = {(int(t), int(e)): np.array(f) for (t, e), f in zip(keys, finals)}
        self.pos, full = (int(v) for v in read("cursor"))
        self.full = bool(full)
        self._next_is_start = read("next_is_start", self._next_is_start).copy()

    def end_episodes(self, final_obs: np.ndarray) -> None:
        """Close every env's running episode after its newest slot, with ``final_obs`` (N, *obs_shape)
        as the successor: used when the envs are reset out of turn (resuming an Atari run)."""
        t = (self.pos - 1) % self.size_per_env
        if len(self) == 0:
            return
        for e in np.flatnonzero(~self._next_is_start):  # envs whose episode is still running
            self.episode_end[t, e] = True
            self.final_frames[(t, e)] = np.array(final_obs[e][-1] if self.frame_stack > 1 else final_obs[e])
        self._next_is_start[:] = True

    @staticmethod
    def nbytes_for(capacity: int, obs_shape: tuple[int, ...], obs_dtype: np.dtype, frame_stack: int) -> int:
        """Bytes the frame storage of a buffer with these settings takes (for memory checks)."""
        frame_shape = obs_shape[1:] if frame_stack > 1 else obs_shape
        return int(capacity * np.prod(frame_shape) * np.dtype(obs_dtype).itemsize)
