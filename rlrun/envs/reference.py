"""Exact models of small MDPs and reference values of a fixed policy, against which learned values are scored.

The lectures' MDPs (rlrun.envs.lecture) and gymnasium's toy-text envs have exact models
(:func:`tabular_model`); for them V^pi and Q^pi come from a linear solve (:func:`policy_evaluation`). The
lecture's noisy random walk has a vectorized Monte-Carlo estimate (``NoisyRandomWalk.monte_carlo_values``),
and any env that ``copy.deepcopy`` copies gets Monte-Carlo values on held-out states (:func:`held_out_set`).
:func:`make_eval_set` picks the right one; ``algo=td`` scores its networks on it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
from gymnasium import spaces
from omegaconf import DictConfig

from rlrun.envs import lecture
from rlrun.envs.factory import discrete_states, make_single_env, probe_env
from rlrun.core.config import fail
from rlrun.nn.networks import ObsEncoder

REFERENCE_STREAM = 3  # np.random.default_rng([seed, REFERENCE_STREAM]): the reference values' own random stream
HELD_OUT_SEED_OFFSET = 20_000  # held-out episodes are seeded from seed + this, apart from the training envs


def tabular_model(cfg: DictConfig) -> lecture.TabularModel:
    """The exact model of ``cfg.env``: a lecture MDP's own, or one built from a gymnasium toy-text env's
    ``P`` table (FrozenLake, Taxi, CliffWalking).

    Raises:
        ConfigError: the env has no discrete states or no exact model.
    """
    num_states = discrete_states(cfg)
    _, _, unwrapped = probe_env(cfg)
    if hasattr(unwrapped, "model"):
        return unwrapped.model()
    if not hasattr(unwrapped, "P"):
        fail("env", cfg.env.name, f"an env with an exact model for value iteration; {cfg.env.id} has none "
             "(use tabular Q-learning, algo=q_learning)")
    num_actions = int(unwrapped.action_space.n)
    transitions = np.zeros((num_states, num_actions, num_states))
    rewards = np.zeros((num_states, num_actions))
    terminal = np.zeros(num_states, dtype=bool)
    for s in range(num_states):
        for a in range(num_actions):
            for prob, target, reward, done in unwrapped.P[s][a]:
                rewards[s, a] += prob * reward
                if done:  # a terminating outcome leads to an absorbing copy: model it as a terminal target
                    terminal[target] = terminal[target] or target != s
                transitions[s, a, target] += prob
    transitions[terminal] = 0.0
    start = int(np.argmax(getattr(unwrapped, "initial_state_distrib", np.eye(num_states)[0])))
    return lecture.TabularModel(transitions, rewards, terminal, start)


def discrete_model(cfg: DictConfig, observation_space: spaces.Space, unwrapped) -> lecture.TabularModel | None:
    """The exact model of an env with discrete states, or None (the random walk, CartPole, ...).

    Discrete states: a ``Discrete`` observation space with a model (the lecture MDPs, or a
    gymnasium toy-text env with a ``P`` table), or a lecture MDP observed as one-hot vectors.
    """
    if isinstance(observation_space, spaces.Discrete) and (hasattr(unwrapped, "model") or hasattr(unwrapped, "P")):
        return tabular_model(cfg)
    if getattr(unwrapped, "one_hot", False) and hasattr(unwrapped, "model"):
        return unwrapped.model()
    return None


def policy_evaluation(model: lecture.TabularModel, probs: np.ndarray, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact V^pi and Q^pi of a finite MDP under a state-independent policy.

    Solves (I - gamma P_pi) V = r_pi on the non-terminal states, with P_pi(s' | s) =
    sum_a pi(a) P(s' | s, a), r_pi(s) = sum_a pi(a) R(s, a) and V = 0 on terminal states; then
    Q(s, a) = R(s, a) + gamma sum_s' P(s' | s, a) V(s') (Sutton and Barto 2018, eqs. 4.4 and 3.13).

    Args:
        model: S states, A actions.
        probs: (A,) float64 pi(a).
        gamma: discount in [0, 1]; at 1 the policy must reach a terminal state from every state
            (see :func:`states_never_ending`).

    Returns:
        V (S,) and Q (S, A), float64; zero on terminal states.
    """
    nonterminal = ~model.terminal
    p_pi = np.einsum("a,sat->st", probs, model.transitions)
    r_pi = model.rewards @ probs
    values = np.zeros(len(nonterminal))
    inner = np.eye(int(nonterminal.sum())) - gamma * p_pi[np.ix_(nonterminal, nonterminal)]
    values[nonterminal] = np.linalg.solve(inner, r_pi[nonterminal])
    q_values = model.rewards + gamma * model.transitions @ values
    q_values[model.terminal] = 0.0
    return values, q_values


def states_never_ending(model: lecture.TabularModel, probs: np.ndarray) -> np.ndarray:
    """Indices of the non-terminal states from which the policy never reaches a terminal state.

    Such states have unbounded returns at gamma = 1. A finite Markov chain from which a terminal
    state is reachable with positive probability reaches one with probability 1.
    """
    p_pi = np.einsum("a,sat->st", probs, model.transitions)
    reaches = model.terminal.copy()
    for _ in range(len(reaches)):
        grown = reaches | (p_pi[:, reaches].sum(axis=1) > 0)
        if (grown == reaches).all():
            break
        reaches = grown
    return np.flatnonzero(~reaches)


def sample_actions(cumulative: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """(n,) int64 actions drawn from the policy with cumulative probabilities ``cumulative`` (A,)."""
    return np.minimum(np.searchsorted(cumulative, rng.random(n), side="right"), len(cumulative) - 1)


@dataclass
class EvalSet:
    """States on which the learned function is compared with reference values. G states, D features, A actions.

    Attributes:
        kind: ``grid`` (random walk, vectorized Monte Carlo), ``exact`` (policy evaluation of a model) or
            ``held_out`` (states visited by pi, Monte Carlo from copies of the env).
        columns: names of the state columns of values.csv.
        rows: (G, len(columns)) the state columns' values.
        inputs: (G, D) float32 network inputs.
        reference: (G,) float64 V^pi, or (G, A) Q^pi.
    """

    kind: str
    columns: list[str]
    rows: np.ndarray
    inputs: np.ndarray
    reference: np.ndarray


def make_eval_set(cfg: DictConfig, probs: np.ndarray, gamma: float, q: bool, encoder: ObsEncoder,
                  grid: tuple[float, float, int], reference_episodes: int, held_out_rollouts: int) -> EvalSet:
    """The evaluation states of ``cfg.env`` and their reference values of the fixed policy (A,) ``probs`` at
    discount ``gamma``, V^pi or (``q``) Q^pi (see the module docstring): on the random walk the grid
    ``(low, high, points)`` with ``reference_episodes`` walks per point; with an exact model every
    non-terminal state; otherwise ``points`` held-out states with ``held_out_rollouts`` rollouts each.

    Deterministic given ``cfg.seed``, so a resumed run rebuilds the same set.
    """
    env = make_single_env(cfg)
    unwrapped, observation_space = env.unwrapped, env.observation_space
    num_actions = int(env.action_space.n)
    low, high, points = grid
    rng = np.random.default_rng([int(cfg.seed), REFERENCE_STREAM])
    try:
        if isinstance(unwrapped, lecture.NoisyRandomWalk):
            xs = np.linspace(low, high, int(points))
            if q:
                reference = np.stack([unwrapped.monte_carlo_values(xs, probs, gamma, reference_episodes, rng,
                                                                   first_action=a) for a in range(num_actions)], 1)
            else:
                reference = unwrapped.monte_carlo_values(xs, probs, gamma, reference_episodes, rng)
            return EvalSet("grid", ["x"], xs[:, None], xs[:, None].astype(np.float32), reference)
        model = discrete_model(cfg, observation_space, unwrapped)
        if model is not None:
            states = np.flatnonzero(~model.terminal)
            values, q_values = policy_evaluation(model, probs, gamma)
            inputs = np.eye(encoder.features, dtype=np.float32)[states]
            return EvalSet("exact", ["state"], states[:, None], inputs, q_values[states] if q else values[states])
        return held_out_set(env, probs, gamma, q, encoder, int(points), int(held_out_rollouts),
                            int(cfg.seed) + HELD_OUT_SEED_OFFSET, rng)
    finally:
        env.close()


def held_out_set(env, probs: np.ndarray, gamma: float, q: bool, encoder: ObsEncoder, points: int, rollouts: int,
                 seed: int, rng: np.random.Generator) -> EvalSet:
    """States visited by pi, with Monte-Carlo reference values from copies of the env (any env that
    ``copy.deepcopy`` copies: gymnasium's classic control and toy text).

    Plays ``points`` episodes of pi (episode i from ``env.reset(seed=seed + i)``), draws one step t
    of each uniformly, replays the episode with the same seed and actions up to s_t, and averages
    the discounted returns of ``rollouts`` rollouts of pi from deep copies of the env there (each
    copy's random generator reseeded; for Q, per first action). A rollout ends where the episode
    would: at termination or the env's time limit, whose remaining steps the copy inherits.

    Returns:
        An EvalSet of kind ``held_out``: G = ``points`` states, reference (G,) or (G, A) float64.
    """
    cumulative = np.cumsum(probs)

    def draw() -> int:
        return int(sample_actions(cumulative, rng, 1)[0])

    def rollout(start, first_action: int | None) -> float:
        sim = copy.deepcopy(start)
        sim.unwrapped.np_random = np.random.default_rng(int(rng.integers(2 ** 63)))
        ret, discount = 0.0, 1.0
        action = draw() if first_action is None else first_action
        while True:
            _, reward, terminated, truncated, _ = sim.step(action)
            ret += discount * float(reward)
            discount *= gamma
            if terminated or truncated:
                return ret
            action = draw()

    inputs, references = [], []
    for i in range(points):
        env.reset(seed=seed + i)
        actions = []
        while True:
            actions.append(draw())
            _, _, terminated, truncated, _ = env.step(actions[-1])
            if terminated or truncated:
                break
        t = int(rng.integers(len(actions)))
        obs, _ = env.reset(seed=seed + i)  # replay to s_t: the same seed and actions give the same states
        for action in actions[:t]:
            obs, *_ = env.step(action)
        inputs.append(encoder(np.asarray([obs]))[0])
        firsts = range(len(probs)) if q else [None]
        references.append([np.mean([rollout(env, a) for _ in range(rollouts)]) for a in firsts])
    inputs_arr = np.stack(inputs)
    reference = np.asarray(references)
    columns = ["state"] if encoder.one_hot else [f"obs_{j}" for j in range(encoder.features)]
    rows = inputs_arr.argmax(1)[:, None] if encoder.one_hot else inputs_arr.astype(np.float64)
    return EvalSet("held_out", columns, rows, inputs_arr, reference if q else reference[:, 0])
