"""The small environments of the lectures in ``seeds/``, as gymnasium envs with every number a keyword.

* :class:`RecyclingChain`: the "recycling is good" chain of the CS230 deep RL lecture.
* :class:`ExplorationTrap`: the one-state, three-action trap that greedy Q-learning falls into
  (same lecture).
* :class:`NoisyRandomWalk`: the noisy random walk of the "Scaling up RL" lecture, on which V^pi is
  learned by TD(1) and TD(0) and REINFORCE is run.
* :class:`LinearFeatures`: random features with a known linear reward, which a reward model learned
  from preferences should recover (RLHF lecture).
* :class:`GridWorld`: a grid of cells with features, a slip probability and a true reward linear in
  the features, on which maximum-entropy inverse RL recovers an expert's reward and visitation
  frequencies (imitation-learning lecture).

They are registered as ``rlrun/RecyclingChain-v0``, ``rlrun/ExplorationTrap-v0``,
``rlrun/NoisyRandomWalk-v0``, ``rlrun/LinearFeatures-v0`` and ``rlrun/GridWorld-v0`` when ``rlrun.envs`` is imported, so ``env=recycling`` (or any
gymnasium code) builds them with ``gymnasium.make(id, **kwargs)``.

The discrete MDPs (chain, trap, grid) also describe themselves exactly (:meth:`RecyclingChain.model`), which
is what value iteration needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

LEFT, RIGHT = 0, 1  # action indices of the chain and of the random walk


@dataclass
class TabularModel:
    """An exact finite MDP model. S states, A actions.

    Attributes:
        transitions: (S, A, S) float64, P(s' | s, a); rows of terminal states are all zero.
        rewards: (S, A) float64, the expected reward of taking a in s.
        terminal: (S,) bool, episodes end on entering these states.
        start: index of the start state.
    """

    transitions: np.ndarray
    rewards: np.ndarray
    terminal: np.ndarray
    start: int


def _one_hot(index: int, size: int) -> np.ndarray:
    out = np.zeros(size, dtype=np.float32)
    out[index] = 1.0
    return out


class RecyclingChain(gym.Env):
    """A chain of states: moving LEFT or RIGHT enters the neighbouring state and earns that state's reward.

    The lecture's default (CS230 deep RL lecture, "recycling is good"): five states, the garbage can
    (+2, terminal) at the left end, the start in the second state, an empty state, a chocolate
    wrapper (+1 every time the state is entered) and the recycle bin (+10, terminal) at the right end.
    With gamma = 1 and its three-minute rule (``max_episode_steps=3``) the best return is 11;
    with gamma = 0.9 and no step limit Q*(start) = (2, 9).

    Moving off an end that is not terminal leaves the state unchanged and earns nothing.

    Args:
        length: number of states S >= 2.
        rewards: S rewards, ``rewards[i]`` is earned on entering state i.
        terminal_states: indices of the terminal states (may be empty with a step limit).
        start: index of the start state (0-based: the lecture's state 2 is index 1); not terminal.
        one_hot: observe a (S,) float32 one-hot vector instead of the state index (for networks).
        render_mode: accepted for gymnasium's ``make``; these envs do not render.

    Observations: the state index (``Discrete(S)``) or its one-hot vector. Actions: ``Discrete(2)``,
    0 = LEFT, 1 = RIGHT.

    Raises:
        ValueError: wrong number of rewards, a state index outside the chain, or a terminal start.
    """

    metadata = {"render_modes": []}

    def __init__(self, length: int = 5, rewards: Sequence[float] = (2, 0, 0, 1, 10),
                 terminal_states: Sequence[int] = (0, 4), start: int = 1, one_hot: bool = False,
                 render_mode: str | None = None):
        self.length = int(length)
        if self.length < 2:
            raise ValueError(f"length={length} is not allowed: a chain needs at least 2 states")
        if len(rewards) != self.length:
            raise ValueError(f"rewards has {len(rewards)} entries: expected one per state, {self.length}")
        for index in [*terminal_states, start]:
            if not 0 <= int(index) < self.length:
                raise ValueError(f"state index {index} is not allowed: expected 0 to {self.length - 1}")
        if start in terminal_states:
            raise ValueError(f"start={start} is not allowed: it is a terminal state")
        self.state_rewards = np.asarray(rewards, dtype=np.float64)
        self.terminal = np.zeros(self.length, dtype=bool)
        self.terminal[list(terminal_states)] = True
        self.start = int(start)
        self.one_hot = bool(one_hot)
        self.action_space = spaces.Discrete(2)
        self.observation_space = (spaces.Box(0.0, 1.0, (self.length,), np.float32) if self.one_hot
                                  else spaces.Discrete(self.length))
        self.state = self.start

    def _obs(self):
        return _one_hot(self.state, self.length) if self.one_hot else self.state

    def _next(self, state: int, action: int) -> tuple[int, float]:
        target = state + (1 if action == RIGHT else -1)
        if not 0 <= target < self.length:
            return state, 0.0
        return target, float(self.state_rewards[target])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.state = self.start
        return self._obs(), {}

    def step(self, action):
        self.state, reward = self._next(self.state, int(action))
        return self._obs(), reward, bool(self.terminal[self.state]), False, {}

    def model(self) -> TabularModel:
        """The exact (deterministic) transition and reward model."""
        S = self.length
        transitions, rewards = np.zeros((S, 2, S)), np.zeros((S, 2))
        for s in np.flatnonzero(~self.terminal):
            for a in (LEFT, RIGHT):
                target, reward = self._next(int(s), a)
                transitions[s, a, target], rewards[s, a] = 1.0, reward
        return TabularModel(transitions, rewards, self.terminal.copy(), self.start)


class ExplorationTrap(gym.Env):
    """One state and K actions; each action ends the episode with its reward.

    The lecture's default (CS230 deep RL lecture, exploration): rewards 0, 1 and 1000. A learner
    whose initial estimates are (0.5, 0.4, 0.3) and that always acts greedily tries action 0
    (learns 0), then action 1 (learns 1) and keeps taking it, never finding the 1000.

    Args:
        rewards: K >= 2 terminal rewards, one per action.
        one_hot: observe a (1,) float32 vector of ones instead of the index 0 (for networks).
        render_mode: accepted for gymnasium's ``make``; these envs do not render.

    Observations: ``Discrete(1)`` (always 0) or ``Box`` (1,) of 1.0. Actions: ``Discrete(K)``.
    """

    metadata = {"render_modes": []}

    def __init__(self, rewards: Sequence[float] = (0, 1, 1000), one_hot: bool = False,
                 render_mode: str | None = None):
        if len(rewards) < 2:
            raise ValueError(f"rewards={list(rewards)} is not allowed: the trap needs at least 2 actions")
        self.rewards = np.asarray(rewards, dtype=np.float64)
        self.one_hot = bool(one_hot)
        self.action_space = spaces.Discrete(len(self.rewards))
        self.observation_space = spaces.Box(0.0, 1.0, (1,), np.float32) if self.one_hot else spaces.Discrete(1)

    def _obs(self):
        return _one_hot(0, 1) if self.one_hot else 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        return self._obs(), {}

    def step(self, action):
        return self._obs(), float(self.rewards[int(action)]), True, False, {}

    def model(self) -> TabularModel:
        """The exact model: every action leads to a terminal copy of the state (index 1)."""
        K = len(self.rewards)
        transitions = np.zeros((2, K, 2))
        transitions[0, :, 1] = 1.0
        rewards = np.zeros((2, K))
        rewards[0] = self.rewards
        return TabularModel(transitions, rewards, np.array([False, True]), 0)


class NoisyRandomWalk(gym.Env):
    """A walk on the line ("Scaling up RL" lecture, "Learning V^pi: example").

    The state x starts at ``start``; LEFT moves it by N(-step, sigma^2), RIGHT by N(+step, sigma^2);
    every action earns ``reward``; the episode terminates when x leaves [low, high]. The lecture's
    values: x in [-3, 3], start 0, step 1, sigma 1/4, reward -1, gamma 1, so under the uniformly
    random policy -V^pi(x) is the expected number of actions until x leaves the interval
    (about 12 from x = 0).

    Args:
        low, high: the interval, low < start < high.
        start: initial state; ``reset(options={"x": x0})`` starts elsewhere.
        step: mean move of one action (> 0).
        sigma: standard deviation of a move (>= 0).
        reward: reward of every action.
        render_mode: accepted for gymnasium's ``make``; these envs do not render.

    Observations: (1,) float32 x (the last one outside the interval). Actions: ``Discrete(2)``,
    0 = LEFT, 1 = RIGHT.
    """

    metadata = {"render_modes": []}

    def __init__(self, low: float = -3.0, high: float = 3.0, start: float = 0.0, step: float = 1.0,
                 sigma: float = 0.25, reward: float = -1.0, render_mode: str | None = None):
        if not low < start < high:
            raise ValueError(f"start={start} is not allowed: expected low < start < high ({low} < start < {high})")
        if step <= 0 or sigma < 0:
            raise ValueError(f"step={step}, sigma={sigma} are not allowed: expected step > 0 and sigma >= 0")
        self.low, self.high, self.start = float(low), float(high), float(start)
        self.step_size, self.sigma, self.reward = float(step), float(sigma), float(reward)
        self.action_space = spaces.Discrete(2)
        self.observation_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.x = self.start

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.x = float((options or {}).get("x", self.start))
        return np.array([self.x], dtype=np.float32), {}

    def step(self, action):
        direction = 1.0 if int(action) == RIGHT else -1.0
        self.x += direction * self.step_size + self.sigma * float(self.np_random.standard_normal())
        terminated = not self.low <= self.x <= self.high
        return np.array([self.x], dtype=np.float32), self.reward, terminated, False, {}

    def monte_carlo_values(self, xs: np.ndarray, action_probs: np.ndarray, gamma: float, episodes: int,
                           rng: np.random.Generator, first_action: int | None = None,
                           max_steps: int = 100_000) -> np.ndarray:
        """Monte-Carlo estimate of V^pi(x) (or Q^pi(x, first_action)) for a state-independent policy.

        Simulates ``episodes`` walks from every x in ``xs`` at once (NumPy, no Python loop per walk)
        and averages their discounted returns.

        Args:
            xs: (G,) start states.
            action_probs: (2,) probabilities of LEFT and RIGHT.
            gamma: discount in [0, 1].
            episodes: walks per start state.
            rng: the random generator.
            first_action: if set, the first action is this one (estimates Q^pi) instead of drawn from pi.
            max_steps: walks still inside after this many actions stop (their return so far counts).

        Returns:
            (G,) float64 mean discounted returns.
        """
        x = np.repeat(np.asarray(xs, dtype=np.float64)[:, None], episodes, axis=1)
        inside = (self.low <= x) & (x <= self.high)
        returns = np.zeros_like(x)
        discount = 1.0
        for t in range(max_steps):
            if not inside.any():
                break
            if t == 0 and first_action is not None:
                right = np.full(x.shape, first_action == RIGHT)
            else:
                right = rng.random(x.shape) < action_probs[RIGHT]
            move = np.where(right, 1.0, -1.0) * self.step_size + self.sigma * rng.standard_normal(x.shape)
            returns += np.where(inside, discount * self.reward, 0.0)
            x = np.where(inside, x + move, x)
            inside &= (self.low <= x) & (x <= self.high)
            discount *= gamma
        return returns.mean(axis=1)


class LinearFeatures(gym.Env):
    """A known linear reward, for checking that a reward model recovers it from preferences (the RLHF
    lecture, seeds/001: a latent reward behind noisy pairwise comparisons).

    Each step observes a fresh feature vector x ~ N(0, I_d) (float32, independent of the past), the agent
    picks one of ``len(action_rewards)`` actions a, and the reward is ``weights . x + action_rewards[a]``:
    linear in (x, one-hot(a)). Episodes end (terminated) after ``horizon`` steps.

    Args:
        weights: the d reward weights of the features.
        action_rewards: the reward of each action (its length is the number of actions).
        horizon: steps per episode (>= 1).
        render_mode: accepted for gymnasium's ``make``; this env does not render.
    """

    metadata = {"render_modes": []}

    def __init__(self, weights: Sequence[float] = (1.0, -2.0, 0.5, 0.0), action_rewards: Sequence[float] = (0.0, 1.0),
                 horizon: int = 50, render_mode: str | None = None):
        self.weights = np.asarray(weights, dtype=np.float64)
        self.action_rewards = np.asarray(action_rewards, dtype=np.float64)
        if self.weights.ndim != 1 or len(self.weights) < 1 or len(self.action_rewards) < 1 or int(horizon) < 1:
            raise ValueError("expected at least one weight, at least one action and horizon >= 1")
        self.horizon = int(horizon)
        self.observation_space = spaces.Box(-np.inf, np.inf, (len(self.weights),), np.float32)
        self.action_space = spaces.Discrete(len(self.action_rewards))
        self.t = 0
        self.x = np.zeros(len(self.weights), np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.t = 0
        self.x = self.np_random.standard_normal(len(self.weights)).astype(np.float32)
        return self.x.copy(), {}

    def step(self, action: int):
        reward = float(self.weights @ self.x + self.action_rewards[int(action)])
        self.t += 1
        self.x = self.np_random.standard_normal(len(self.weights)).astype(np.float32)
        return self.x.copy(), reward, self.t >= self.horizon, False, {}


GRID_MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1), (0, 0))  # (d row, d col) of up, right, down, left, stay
GRID_ACTION_NAMES = ("up", "right", "down", "left", "stay")


class GridWorld(gym.Env):
    """A grid of cells, each with a feature (a letter of ``feature_map``), and a true reward linear in the features.

    The imitation-learning lecture's setting for maximum-entropy inverse RL (Ziebart et al. 2008): known
    dynamics, state features phi(s) and a reward r(s) = w . phi(s). Here phi(s) is the one-hot vector of the
    cell's letter among the keys of ``feature_rewards`` (in their order), and w their values.

    Each step the agent acts in cell s and earns r(s); the action moves it one cell up, right, down or left,
    or keeps it in place (stay). With probability ``slip_prob`` the action is replaced by one drawn
    uniformly from all five. A move off the grid keeps the agent in place. There are no terminal states:
    episodes end at the step limit (``env.max_episode_steps``, the horizon T).

    Args:
        size: (rows, cols), each >= 1.
        feature_map: ``rows`` strings of ``cols`` letters, the feature of each cell (row 0 is the top).
        feature_rewards: {letter: true reward}; every letter of the map must be a key.
        slip_prob: probability in [0, 1] that the action is replaced by a uniformly random one.
        start: [row, col] of the start cell, or None to start in a uniformly random cell.
        one_hot: observe a (S,) float32 one-hot vector of the cell (for networks) instead of its index
            row * cols + col (for tables).
        render_mode: accepted for gymnasium's ``make``; this env does not render.

    Observations: ``Discrete(S)`` cell indices, S = rows * cols, or their one-hot vectors. Actions:
    ``Discrete(5)``: 0 up, 1 right, 2 down, 3 left, 4 stay.

    Raises:
        ValueError: a size below 1, a feature map that does not cover the grid (wrong number of rows or
            letters per row, or a letter without a reward), a slip probability outside [0, 1] or a start
            outside the grid; the message names what is wrong.
    """

    metadata = {"render_modes": []}

    def __init__(self, size: Sequence[int] = (5, 5),
                 feature_map: Sequence[str] = ("aaaab", "acaaa", "acaca", "aaaca", "daaaa"),
                 feature_rewards: dict | None = None, slip_prob: float = 0.1, start: Sequence[int] | None = None,
                 one_hot: bool = False, render_mode: str | None = None):
        if len(size) != 2 or min(int(n) for n in size) < 1:
            raise ValueError(f"size={list(size)} is not allowed: expected [rows, cols], each >= 1")
        self.rows, self.cols = int(size[0]), int(size[1])
        rewards = dict(feature_rewards if feature_rewards is not None else {"a": -0.1, "b": 1.0, "c": -1.0, "d": 0.5})
        if not rewards:
            raise ValueError("feature_rewards is empty: expected {letter: reward} for every letter of feature_map")
        self.feature_names = [str(k) for k in rewards]
        self.feature_weights = np.array([float(v) for v in rewards.values()], dtype=np.float64)
        feature_map = [str(row) for row in feature_map]
        if len(feature_map) != self.rows or any(len(row) != self.cols for row in feature_map):
            shape = [len(row) for row in feature_map]
            raise ValueError(f"feature_map has rows of lengths {shape}: the features do not cover the "
                             f"{self.rows}x{self.cols} grid; expected {self.rows} strings of {self.cols} letters")
        index = {name: i for i, name in enumerate(self.feature_names)}
        cells = []
        for r, row in enumerate(feature_map):
            for c, letter in enumerate(row):
                if letter not in index:
                    raise ValueError(f"feature_map cell (row {r}, col {c}) has feature {letter!r}, which "
                                     f"feature_rewards does not define: the features do not cover every state; "
                                     f"expected one of {self.feature_names}")
                cells.append(index[letter])
        self.cell_features = np.array(cells, dtype=np.int64)  # (S,) feature index of each cell
        if not 0.0 <= float(slip_prob) <= 1.0:
            raise ValueError(f"slip_prob={slip_prob} is not allowed: expected a probability in [0, 1]")
        self.slip_prob = float(slip_prob)
        if start is not None and (len(start) != 2 or not (0 <= int(start[0]) < self.rows and 0 <= int(start[1]) < self.cols)):
            raise ValueError(f"start={list(start)} is not allowed: expected [row, col] inside the "
                             f"{self.rows}x{self.cols} grid, or null for a uniformly random cell")
        self.start = None if start is None else int(start[0]) * self.cols + int(start[1])
        self.num_states = self.rows * self.cols
        self.one_hot = bool(one_hot)
        self.action_space = spaces.Discrete(len(GRID_MOVES))
        self.observation_space = (spaces.Box(0.0, 1.0, (self.num_states,), np.float32) if self.one_hot
                                  else spaces.Discrete(self.num_states))
        self._targets = np.array([[self._move(s, a) for a in range(len(GRID_MOVES))]
                                  for s in range(self.num_states)])  # (S, 5) cell each move leads to
        self.state = 0 if self.start is None else self.start

    def _move(self, state: int, action: int) -> int:
        r, c = divmod(state, self.cols)
        dr, dc = GRID_MOVES[action]
        if 0 <= r + dr < self.rows and 0 <= c + dc < self.cols:
            return (r + dr) * self.cols + c + dc
        return state

    def state_features(self) -> np.ndarray:
        """(S, D) float64 features phi(s): the one-hot vector of each cell's letter."""
        return np.eye(len(self.feature_names))[self.cell_features]

    def state_rewards(self) -> np.ndarray:
        """(S,) float64 true rewards r(s) = w . phi(s)."""
        return self.feature_weights[self.cell_features]

    def initial_distribution(self) -> np.ndarray:
        """(S,) float64 distribution of the first state."""
        if self.start is None:
            return np.full(self.num_states, 1.0 / self.num_states)
        return np.eye(self.num_states)[self.start]

    def _obs(self):
        return _one_hot(self.state, self.num_states) if self.one_hot else self.state

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.state = int(self.np_random.integers(self.num_states)) if self.start is None else self.start
        return self._obs(), {}

    def step(self, action):
        reward = float(self.feature_weights[self.cell_features[self.state]])
        action = int(action)
        if self.slip_prob > 0 and self.np_random.random() < self.slip_prob:
            action = int(self.np_random.integers(len(GRID_MOVES)))
        self.state = int(self._targets[self.state, action])
        return self._obs(), reward, False, False, {}

    def model(self) -> TabularModel:
        """The exact model: P(s' | s, a) = (1 - slip) [s' = move(s, a)] + slip / 5 sum_b [s' = move(s, b)],
        R(s, a) = r(s); no terminal states; ``start`` is the start cell (0 with a random start, see
        :meth:`initial_distribution`)."""
        S, A = self.num_states, len(GRID_MOVES)
        transitions = np.zeros((S, A, S))
        for s in range(S):
            for a in range(A):
                transitions[s, a, self._targets[s, a]] += 1.0 - self.slip_prob
                for b in range(A):
                    transitions[s, a, self._targets[s, b]] += self.slip_prob / A
        rewards = np.repeat(self.state_rewards()[:, None], A, axis=1)
        return TabularModel(transitions, rewards, np.zeros(S, dtype=bool), 0 if self.start is None else self.start)


ENV_IDS = {  # gymnasium id -> class, registered by rlrun.envs
    "rlrun/RecyclingChain-v0": RecyclingChain,
    "rlrun/ExplorationTrap-v0": ExplorationTrap,
    "rlrun/NoisyRandomWalk-v0": NoisyRandomWalk,
    "rlrun/LinearFeatures-v0": LinearFeatures,
    "rlrun/GridWorld-v0": GridWorld,
}


def register() -> None:
    """Register the lecture envs with gymnasium (idempotent)."""
    for env_id, cls in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=f"{cls.__module__}:{cls.__name__}", disable_env_checker=True)
