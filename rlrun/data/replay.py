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

n-step returns (Sutton 1988; Mnih et al. 2016; Hessel et al. 2018) are built at
sampling time from the same slots: the n rewards from slot t on, cut at the first
``terminated`` (a true end or an Atari life loss: no bootstrap) or episode end (a
truncation: bootstrap from the episode's final observation). With ``n_step`` = n
the newest n slots of each env are not sampled (their n successors are not all
stored yet).
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
        discounts: (B,) float32 gamma^k, the discount of the bootstrap after the k <= n steps the n-step
            return spans; None for 1-step transitions (the caller's gamma applies).
        weights: (B,) float32 importance-sampling weights of prioritized replay, None for uniform replay.
        indices: (B,) int64 flat slot indices ``t * num_envs + e`` (for priority updates).
    """

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    discounts: np.ndarray | None = None
    weights: np.ndarray | None = None
    indices: np.ndarray | None = None


class ReplayBuffer:
    """Ring buffer of transitions from ``num_envs`` envs stepped in lockstep.

    Args:
        capacity: transitions kept in total (rounded down to a multiple of num_envs;
            must be at least ``num_envs * (frame_stack + n_step)``).
        obs_shape: shape of one observation, e.g. (4, 84, 84) or (4,).
        obs_dtype: dtype of observations (uint8 for frames, float32 for vectors).
        action_shape: shape of one action, () for discrete.
        action_dtype: dtype of actions.
        num_envs: number of envs N whose steps arrive together in ``add``.
        frame_stack: K, the leading axis of ``obs_shape`` that holds stacked frames;
            1 stores observations as they are.
        seed: seed of the sampler's NumPy generator.
        n_step: n of the n-step returns that :meth:`sample` builds (1 = one-step transitions).
        gamma: discount of the n-step returns (unused for n_step = 1).

    Raises:
        ValueError: if the capacity is too small, ``n_step < 1`` or ``obs_shape`` does not start with K.
    """

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], obs_dtype: np.dtype,
                 action_shape: tuple[int, ...] = (), action_dtype: np.dtype = np.int64,
                 num_envs: int = 1, frame_stack: int = 1, seed: int = 0, n_step: int = 1, gamma: float = 0.99):
        self.num_envs = num_envs
        self.frame_stack = frame_stack
        self.size_per_env = capacity // num_envs
        if n_step < 1:
            raise ValueError(f"n_step={n_step} is not allowed: expected an int >= 1")
        self.n_step, self.gamma = int(n_step), float(gamma)
        if self.size_per_env < frame_stack + n_step:
            raise ValueError(f"replay capacity {capacity} is too small for {num_envs} envs with frame_stack "
                             f"{frame_stack} and n_step {n_step}: need at least {num_envs * (frame_stack + n_step)}")
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

        Excludes the newest n slots (their n successors are not all stored yet; n = 1 for one-step
        transitions) and, once the ring has wrapped, the K-1 oldest slots (their stacks reach
        overwritten frames).
        """
        k, n = self.frame_stack, self.n_step
        if not self.full:
            return 0, max(self.pos - n, 0)
        return self.pos + k - 1, self.size_per_env - k - n + 1

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
        """The transitions at slots ``t`` (B,) of envs ``e`` (B,), which must be valid slots; n-step
        transitions (rewards summed with discounts, the successor k <= n steps on) when ``n_step`` > 1."""
        obs = self._stack(t, e)
        discounts = None
        if self.n_step == 1:
            last, rewards = t, self.rewards[t, e]
        else:
            n = self.n_step
            idx = (t[:, None] + np.arange(n)) % self.size_per_env  # (B, n): slots t .. t+n-1
            stops = (self.terminated[idx, e[:, None]] > 0) | self.episode_end[idx, e[:, None]]
            stops[:, -1] = True
            k = stops.argmax(axis=1)  # (B,) the return spans steps 0..k: it is cut at the first end
            powers = self.gamma ** np.arange(n)
            rewards = (self.rewards[idx, e[:, None]] * powers * (np.arange(n) <= k[:, None])).sum(axis=1)
            rewards = rewards.astype(np.float32)
            last = idx[np.arange(len(t)), k]
            discounts = (self.gamma ** (k + 1)).astype(np.float32)
        next_obs = self._stack((last + 1) % self.size_per_env, e)
        ends = np.flatnonzero(self.episode_end[last, e])
        if ends.size:
            # the successor of an episode's last step is its final observation, not the next episode's first
            finals = np.stack([self.final_frames[(int(last[i]), int(e[i]))] for i in ends])
            if self.frame_stack > 1:
                before = obs[ends] if self.n_step == 1 else self._stack(last[ends], e[ends])
                next_obs[ends, :-1] = before[:, 1:]
                next_obs[ends, -1] = finals
            else:
                next_obs[ends] = finals
        return TransitionBatch(obs, self.actions[t, e], rewards, next_obs, self.terminated[last, e], discounts)

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
    def nbytes_for(capacity: int, obs_shape: tuple[int, ...], obs_dtype: np.dtype, frame_stack: int,
                   prioritized: bool = False) -> int:
        """Bytes a buffer with these settings takes once full (for memory checks): the frames, the
        per-slot arrays (int64 action, float32 reward and terminated flag, two bools) and, if
        ``prioritized``, the float64 sum tree."""
        frame_shape = obs_shape[1:] if frame_stack > 1 else obs_shape
        per_slot = int(np.prod(frame_shape)) * np.dtype(obs_dtype).itemsize + 8 + 4 + 4 + 2
        tree = 2 * SumTree.leaves_for(capacity) * 8 if prioritized else 0
        return int(capacity * per_slot + tree)


class SumTree:
    """A binary sum tree over ``capacity`` non-negative priorities, in one float64 array, with batched
    (vectorized NumPy) updates and prefix-sum searches (Schaul et al. 2016, Appendix B.2.1).

    Leaves live at ``tree[size:size + capacity]`` (size = the next power of two), node i holds the sum of
    its children 2i and 2i+1, the root ``tree[1]`` the total.

    Args:
        capacity: number of leaves (>= 1).
    """

    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self.size = self.leaves_for(capacity)
        self.depth = self.size.bit_length() - 1
        self.tree = np.zeros(2 * self.size, dtype=np.float64)

    @staticmethod
    def leaves_for(capacity: int) -> int:
        """The number of leaves of the tree: ``capacity`` rounded up to a power of two."""
        return 1 << max(int(capacity) - 1, 0).bit_length()

    @property
    def total(self) -> float:
        """The sum of all priorities."""
        return float(self.tree[1])

    def __getitem__(self, index: np.ndarray) -> np.ndarray:
        """Priorities (B,) float64 of leaves ``index`` (B,) int."""
        return self.tree[self.size + np.asarray(index)]

    def update(self, index: np.ndarray, priority: np.ndarray) -> None:
        """Set leaves ``index`` (B,) int to ``priority`` (B,) (>= 0; a repeated index keeps its last value)
        and recompute the sums above them, one tree level at a time."""
        node = self.size + np.asarray(index, dtype=np.int64)
        self.tree[node] = priority
        for _ in range(self.depth):  # a repeated parent is written twice with the same sum
            node >>= 1
            self.tree[node] = self.tree[2 * node] + self.tree[2 * node + 1]

    def find(self, value: np.ndarray) -> np.ndarray:
        """Leaves (B,) int64 whose prefix-sum interval holds ``value`` (B,) in [0, total): the leaf i with
        sum(p[:i]) <= value < sum(p[:i + 1]). A leaf of priority 0 is never returned."""
        value = np.array(value, dtype=np.float64)
        node = np.ones(len(value), dtype=np.int64)
        for _ in range(self.depth):
            left = 2 * node
            left_sum, right_sum = self.tree[left], self.tree[left + 1]
            # rounding can leave value at or above a subtree's sum: never descend into an empty subtree
            go_right = ((value >= left_sum) & (right_sum > 0)) | (left_sum <= 0)
            value = np.where(go_right, np.minimum(value - left_sum, np.nextafter(right_sum, 0)), value)
            node = left + go_right
        return node - self.size


class PrioritizedReplayBuffer(ReplayBuffer):
    """Proportional prioritized experience replay (Schaul et al. 2016, "Prioritized Experience Replay",
    ICLR) over :class:`ReplayBuffer`'s frame-deduplicated storage.

    Transition i is sampled with probability P(i) = p_i^alpha / sum_k p_k^alpha and weighted by
    w_i = (N * P(i))^-beta / max_j w_j (max over the batch, as in Dopamine's Rainbow). A transition enters
    at the largest priority seen so far (so it is replayed at least once soon); :meth:`update_priorities`
    sets p_i = |delta_i| + eps after a gradient step. Slots that cannot be sampled (see
    :meth:`ReplayBuffer.valid_slots`) hold priority 0, so the sum tree samples valid slots only.

    Args:
        capacity, obs_shape, ...: as :class:`ReplayBuffer`.
        alpha: priority exponent in [0, 1] (0 = uniform).
        eps: added to |delta| so no transition gets priority 0.

    Raises:
        ValueError: as :class:`ReplayBuffer`, or ``alpha`` outside [0, 1].
    """

    def __init__(self, *args, alpha: float = 0.6, eps: float = 1e-6, **kwargs):
        super().__init__(*args, **kwargs)
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha={alpha} is not allowed: expected a number in [0, 1]")
        self.alpha, self.eps = float(alpha), float(eps)
        self.tree = SumTree(self.size_per_env * self.num_envs)
        self.max_priority = 1.0

    def add(self, *args, **kwargs) -> None:
        """Store one step of every env (see :meth:`ReplayBuffer.add`); the slot n steps back becomes
        sampleable at the maximum priority, the new slot and the K-1 oldest ones unsampleable."""
        t = self.pos
        super().add(*args, **kwargs)
        m, n, slots = self.num_envs, self.n_step, self.size_per_env
        envs = np.arange(m)
        # the new slot, and once the ring has wrapped the K-1 oldest ones (their stacks reach the new frame)
        dead = (t + np.arange(self.frame_stack if self.full else 1)) % slots
        self.tree.update((dead[:, None] * m + envs).ravel(), 0.0)
        if self.full or t >= n:  # slot t - n now has its n successors
            self.tree.update((t - n) % slots * m + envs, self.max_priority ** self.alpha)

    def sample(self, batch_size: int, beta: float = 1.0) -> TransitionBatch:
        """Sample ``batch_size`` transitions in proportion to their priorities (one from each of
        ``batch_size`` equal slices of the total, Schaul et al. 2016 B.2.1), with importance-sampling
        weights for exponent ``beta`` in [0, 1].

        Raises:
            ValueError: if no complete transition is stored yet.
        """
        total = self.tree.total
        if total <= 0:
            raise ValueError("the replay buffer holds no complete transition yet")
        value = (np.arange(batch_size) + self.rng.random(batch_size)) * (total / batch_size)
        index = self.tree.find(np.minimum(value, np.nextafter(total, 0)))
        probs = self.tree[index] / total
        weights = (self.valid_count() * probs) ** -beta
        batch = self.gather(index // self.num_envs, index % self.num_envs)
        batch.weights = (weights / weights.max()).astype(np.float32)
        batch.indices = index
        return batch

    def valid_count(self) -> int:
        """N, the number of sampleable transitions over all envs."""
        return self.valid_slots()[1] * self.num_envs

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """Set the priorities of the sampled ``indices`` (B,) from their errors (B,) (|TD error|, or the
        distributional loss of C51, as Hessel et al. 2018 do): p = |error| + eps."""
        priority = np.abs(np.asarray(td_errors, dtype=np.float64)) + self.eps
        self.max_priority = max(self.max_priority, float(priority.max()))
        self.tree.update(indices, priority ** self.alpha)

    def save(self, directory: str | Path) -> None:
        """:meth:`ReplayBuffer.save`, and the sum tree's leaves and the maximum priority."""
        super().save(directory)
        np.save(Path(directory) / "priorities.npy", self.tree[np.arange(self.tree.capacity)])
        np.save(Path(directory) / "max_priority.npy", np.array([self.max_priority]))

    def load(self, directory: str | Path) -> None:
        """:meth:`ReplayBuffer.load`, and the priorities (the sum tree is rebuilt from its leaves).

        Raises:
            ValueError: if a file is missing, unreadable or of the wrong shape.
        """
        super().load(directory)
        try:
            leaves = np.load(Path(directory) / "priorities.npy", allow_pickle=False)
            max_priority = float(np.load(Path(directory) / "max_priority.npy", allow_pickle=False)[0])
        except Exception as exc:
            raise ValueError(f"replay snapshot {directory}: cannot read its priorities ({exc})") from None
        if leaves.shape != (self.tree.capacity,):
            raise ValueError(f"replay snapshot {directory}: priorities.npy has shape {leaves.shape}, "
                             f"this buffer needs ({self.tree.capacity},)")
        self.tree.tree[:] = 0
        self.tree.update(np.arange(self.tree.capacity), leaves)
        self.max_priority = max_priority
