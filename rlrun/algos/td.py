"""Value learning for a fixed policy: TD(1), TD(0) with a target network, TD(lambda) and SARSA.

The "Scaling up RL" lecture (slides "Learning V^pi", "Fixed point iteration", "Temporal difference
learning", "TD(0) example", "Learn Q^pi the same ways as V^pi"): follow a fixed policy pi, observe
trajectories s_1, a_1, r_1, s_2, ... and fit a network V_phi(s) ~ V^pi(s) (``algo.target=v``), or
Q_phi(s, a) ~ Q^pi(s, a) with one output per action, trained on the action taken
(``algo.target=q``: SARSA, Rummery and Niranjan 1994, "On-line Q-learning using connectionist
systems", CUED/F-INFENG/TR 166). The regression target of step t of a trajectory is the
lambda-return (Sutton 1988, "Learning to predict by the methods of temporal differences",
Machine Learning 3:9; Sutton and Barto 2018, "Reinforcement Learning: An Introduction", 2nd ed.,
section 12.1), built from the target network phi_i:

    G_t = r_t + gamma * [(1 - lambda) * V_phi_i(s_{t+1}) + lambda * G_{t+1}]      (0 after termination)

* ``method=td1`` (lambda = 1): G_t is the Monte-Carlo discounted return-to-go of the trajectory,
  and fitting it is the lecture's "train as supervised regression (minimize MSE)".
* ``method=td0`` (lambda = 0): G_t = r_t + gamma * V_phi_i(s_{t+1}), the lecture's fixed point
  iteration. phi_i is refreshed (copied from phi) every ``target_network_frequency`` gradient
  steps; 1 is plain TD(0), the lecture's code, where the target is the current network. The
  lecture's "reinitialize phi" after a refresh is not done: phi continues from where it was.
* ``method=td_lambda``: 0 < lambda = ``td_lambda`` < 1 interpolates; td_lambda = 1 and 0 give
  exactly td1 and td0.

For Q (SARSA), V_phi_i(s_{t+1}) becomes Q_phi_i(s_{t+1}, a_{t+1}) with the action the policy took
next: SARSA(1) and SARSA(0) of the lecture. A trajectory cut by a time limit (truncated, not
terminated) bootstraps its last step from the target network's value of its final observation
(Pardo et al. 2018, "Time Limits in Reinforcement Learning", ICML), for Q the expectation
sum_a pi(a) Q_phi_i(s_T, a); so td1 equals Monte-Carlo regression exactly on envs whose episodes
terminate, like the lecture's random walk.

One flat loop: step ``num_envs`` envs with pi -> collect whole trajectories -> once
``trajectories_per_update`` have ended, ``update_epochs`` passes of gradient steps over them
(minibatches of ``batch_size`` samples, or the whole batch) -> every ``eval_interval`` env steps,
the learned values on a set of evaluation states against reference values:

* the lecture's random walk (a 1-D state): the grid ``algo.grid`` (default x = -3, -2.9, ..., 3),
  reference by ``NoisyRandomWalk.monte_carlo_values`` with ``reference_episodes`` walks per point
  (for Q: per point and first action);
* envs with discrete states (the lecture chains with or without ``one_hot``, FrozenLake, ...):
  every non-terminal state, reference by exact policy evaluation of the env's model (a linear solve);
* any other env (CartPole, ...): ``grid.points`` held-out states, one drawn uniformly from each
  of ``grid.points`` separately seeded episodes of pi, with reference the mean discounted return
  of ``held_out_rollouts`` rollouts of pi from copies of the env in that state (:func:`held_out_set`;
  the env must be copyable with ``copy.deepcopy``). Rollouts end where the episode would, so on
  an env with a time limit they see its remaining steps, while the learner bootstraps at the
  limit: there the reference is the time-limited value.

Each evaluation logs ``losses/value_mse`` (the mean squared error against the reference) and
rewrites ``values.csv`` in the run directory (one row per evaluation state: the state, the learned
value(s), the reference value(s)); ``losses/td_loss`` is logged every ``logging.log_interval``
env steps, ``charts/episodic_return`` for every trajectory.

``global_step`` counts env steps summed over envs. A batch always holds whole trajectories, so a
run ends at the first update at or after ``total_timesteps`` env steps (it may overshoot by up to
one batch). ``train`` returns the negative final value MSE (higher is better, what a sweep
maximizes), not a return: the policy is fixed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch
from gymnasium import spaces
from omegaconf import DictConfig, OmegaConf
from torch import nn

from rlrun.config import (check_choice, check_int, check_int_list, check_number, check_that, fail, get)
from rlrun.envs import (check_gamma, lecture, make_single_env, make_vec_env, probe_env, restore_episodes,
                         tabular_model)
from rlrun.nets import MLP, load_weights, make_adam
from rlrun.run import Run, resolve_device, set_rng_state

METRIC = "minus the mean squared error of the learned values against the reference"  # what train returns
EVAL_POLICY = "the fixed policy pi (algo.policy_probs)"  # what rlrun-eval plays
METHOD_LAMBDA = {"td1": 1.0, "td0": 0.0}  # the lambda of the named methods; td_lambda reads algo.td_lambda
PROBS_TOLERANCE = 1e-6  # policy_probs must sum to 1 within this
POLICY_STREAM, SHUFFLE_STREAM, REFERENCE_STREAM = 1, 2, 3  # independent random streams under cfg.seed
HELD_OUT_SEED_OFFSET = 20_000  # held-out episodes are seeded from seed + this, apart from the training envs


# ----------------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------------
def policy_probs(cfg: DictConfig, num_actions: int) -> np.ndarray:
    """The fixed policy pi as (num_actions,) float64 probabilities: ``algo.policy_probs``, or uniform if null.

    Raises:
        ConfigError: the list is not ``num_actions`` numbers >= 0 summing to 1.
    """
    value = get(cfg, "algo.policy_probs")
    if value is None:
        return np.full(num_actions, 1.0 / num_actions)
    items = list(value) if OmegaConf.is_list(value) or isinstance(value, (list, tuple)) else None
    allowed = (f"null (uniformly random) or a list of {num_actions} probabilities >= 0 summing to 1, "
               f"one per action of {cfg.env.id}")
    if items is None or len(items) != num_actions or not all(
            isinstance(p, (int, float)) and not isinstance(p, bool) and p >= 0 for p in items):
        fail("algo.policy_probs", value if items is None else items, allowed)
    if abs(sum(items) - 1.0) > PROBS_TOLERANCE:
        fail("algo.policy_probs", items, allowed + f" (they sum to {sum(items):g})")
    probs = np.asarray(items, dtype=np.float64)
    return probs / probs.sum()


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


def validate(cfg: DictConfig) -> None:
    """Check the td keys and that the env fits (discrete actions, vector or discrete states); raises ConfigError."""
    a = "algo."
    check_choice(cfg, a + "target", ["v", "q"])
    check_choice(cfg, a + "method", ["td1", "td0", "td_lambda"])
    check_number(cfg, a + "td_lambda", low=0, high=1)
    check_int(cfg, a + "target_network_frequency", low=1)
    check_int(cfg, a + "num_envs", low=1)
    check_int(cfg, a + "trajectories_per_update", low=1)
    check_int(cfg, a + "update_epochs", low=1)
    batch_size = check_int(cfg, a + "batch_size", low=1, optional=True)
    reduction = check_choice(cfg, a + "loss_reduction", ["mean", "sum"])
    if reduction == "mean" and batch_size is None:
        fail("algo.loss_reduction", reduction, "sum when algo.batch_size is null (a mean over whole trajectories "
             "weights each step by 1 / the batch's length, which depends on how its trajectories ended and biases "
             "the values), or set algo.batch_size")
    check_choice(cfg, a + "optimizer", ["adam", "sgd"])
    check_number(cfg, a + "learning_rate", low=0, low_open=True)
    check_number(cfg, a + "adam_eps", low=0, low_open=True)
    check_number(cfg, a + "max_grad_norm", low=0, low_open=True, optional=True)
    check_int_list(cfg, a + "hidden_sizes")
    check_choice(cfg, a + "activation", ["relu", "tanh"])
    check_int(cfg, a + "eval_interval", low=0)
    low = check_number(cfg, a + "grid.low")
    high = check_number(cfg, a + "grid.high")
    check_int(cfg, a + "grid.points", low=1)
    check_that(low < high, f"algo.grid.high={high!r} is not allowed: expected a number > algo.grid.low={low!r}")
    check_int(cfg, a + "reference_episodes", low=1)
    check_int(cfg, a + "held_out_rollouts", low=1)
    if cfg.env.family != "gym":
        fail("env", cfg.env.name, "a gymnasium env with vector or discrete observations for algo=td "
             f"(family gym, e.g. random_walk, recycling, cartpole); {cfg.env.id} is an ALE game")
    gamma = check_gamma(cfg)
    observation_space, action_space, unwrapped = probe_env(cfg)
    if not isinstance(action_space, spaces.Discrete):
        fail("env", cfg.env.name, f"an env with discrete actions for algo=td (the fixed policy is a distribution "
             f"over Discrete actions); {cfg.env.id} has action space {action_space}")
    if not (isinstance(observation_space, spaces.Discrete)
            or (isinstance(observation_space, spaces.Box) and len(observation_space.shape) == 1)):
        fail("env", cfg.env.name, f"an env with Discrete or 1-D Box observations for algo=td; {cfg.env.id} has "
             f"observation space {observation_space}")
    probs = policy_probs(cfg, int(action_space.n))
    model = discrete_model(cfg, observation_space, unwrapped)
    if model is None and not isinstance(unwrapped, lecture.NoisyRandomWalk):
        env = make_single_env(cfg)
        try:
            env.reset(seed=int(cfg.seed))
            copy.deepcopy(env)
        except Exception as exc:  # the reference rolls out copies of the env (held_out_set)
            fail("env", cfg.env.name, f"an env that copy.deepcopy can copy for algo=td's reference values on "
                 f"held-out states; copying {cfg.env.id} failed ({exc.__class__.__name__}: {exc})")
        finally:
            env.close()
    if model is not None and gamma == 1.0:
        stuck = states_never_ending(model, probs)
        if len(stuck):
            fail("algo.gamma", gamma, f"a discount below 1: under algo.policy_probs={probs.tolist()} the episodes of "
                 f"{cfg.env.id} never terminate from state(s) {stuck.tolist()}, so V^pi is unbounded at gamma 1")


# ----------------------------------------------------------------------------------------------
# trajectories and targets
# ----------------------------------------------------------------------------------------------
@dataclass
class Trajectory:
    """One episode of the policy. T steps, D = observation features (one-hot for discrete states).

    Attributes:
        obs: (T, D) float32 s_1..s_T.
        actions: (T,) int64 a_1..a_T.
        rewards: (T,) float64 r_1..r_T.
        final_obs: (D,) float32 the observation after the last action.
        terminated: True if the episode terminated (no bootstrap), False if a time limit cut it.
    """

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    final_obs: np.ndarray
    terminated: bool

    def state(self) -> dict:
        """As tensors and plain values (checkpoint-safe)."""
        return {"obs": torch.from_numpy(self.obs), "actions": torch.from_numpy(self.actions),
                "rewards": torch.from_numpy(self.rewards), "final_obs": torch.from_numpy(self.final_obs),
                "terminated": bool(self.terminated)}

    @classmethod
    def from_state(cls, state: dict) -> Trajectory:
        return cls(state["obs"].numpy().copy(), state["actions"].numpy().copy(), state["rewards"].numpy().copy(),
                   state["final_obs"].numpy().copy(), bool(state["terminated"]))


@dataclass
class Batch:
    """Trajectories laid end to end; n = total steps.

    Attributes:
        obs, next_obs: (n, D) float32 s_t and s_{t+1} (the final observation at a trajectory's end).
        actions: (n,) int64 a_t; next_actions: (n,) int64 a_{t+1}, -1 at a trajectory's end.
        rewards: (n,) float64.
        end: (n,) bool, the last step of a trajectory; terminated: (n,) bool, a last step that terminated.
    """

    obs: np.ndarray
    next_obs: np.ndarray
    actions: np.ndarray
    next_actions: np.ndarray
    rewards: np.ndarray
    end: np.ndarray
    terminated: np.ndarray

    @classmethod
    def from_trajectories(cls, trajectories: list[Trajectory]) -> Batch:
        lengths = [len(t.actions) for t in trajectories]
        ends = np.cumsum(lengths) - 1
        end = np.zeros(sum(lengths), dtype=bool)
        end[ends] = True
        terminated = np.zeros_like(end)
        terminated[ends] = [t.terminated for t in trajectories]
        return cls(obs=np.concatenate([t.obs for t in trajectories]),
                   next_obs=np.concatenate([np.concatenate([t.obs[1:], t.final_obs[None]]) for t in trajectories]),
                   actions=np.concatenate([t.actions for t in trajectories]),
                   next_actions=np.concatenate([np.append(t.actions[1:], -1) for t in trajectories]),
                   rewards=np.concatenate([t.rewards for t in trajectories]), end=end, terminated=terminated)


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


class ValueNet(nn.Module):
    """V_phi (``target=v``: (B, D) -> (B,)) or Q_phi (``target=q``: (B, D) -> (B, A)), an MLP on float32 features."""

    def __init__(self, in_features: int, num_actions: int, target: str, hidden_sizes: list[int], activation: str):
        super().__init__()
        self.q = target == "q"
        self.mlp = MLP(in_features, num_actions if self.q else 1, hidden_sizes, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.mlp(x)
        return out if self.q else out.squeeze(-1)


def successor_values(network: nn.Module, batch: Batch, probs: torch.Tensor, device: torch.device) -> np.ndarray:
    """(n,) float64 values of each step's successor under ``network`` (the target network), without gradients.

    V: V(s_{t+1}). Q (SARSA): Q(s_{t+1}, a_{t+1}) inside a trajectory, sum_a pi(a) Q(s_T, a) at its end.
    """
    with torch.no_grad():
        out = network(torch.as_tensor(batch.next_obs, device=device))
        if out.ndim == 2:
            expected = out @ probs
            taken = out.gather(1, torch.as_tensor(np.maximum(batch.next_actions, 0), device=device)[:, None]).squeeze(1)
            out = torch.where(torch.as_tensor(batch.end, device=device), expected, taken)
    return out.double().cpu().numpy()


# ----------------------------------------------------------------------------------------------
# evaluation states and reference values
# ----------------------------------------------------------------------------------------------
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


class Encoder:
    """Observations to network features: a ``Discrete(S)`` index to an (S,) one-hot float32 vector,
    anything else to float32. ``__call__``: (N,) or (N, D) -> (N, D) float32."""

    def __init__(self, observation_space: spaces.Space):
        self.one_hot = isinstance(observation_space, spaces.Discrete)
        self.features = int(observation_space.n) if self.one_hot else int(observation_space.shape[0])

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        if self.one_hot:
            return np.eye(self.features, dtype=np.float32)[np.asarray(obs, dtype=np.int64)]
        return np.asarray(obs, dtype=np.float32).reshape(len(obs), self.features)


def make_eval_set(cfg: DictConfig, args: SimpleNamespace, probs: np.ndarray, encoder: Encoder) -> EvalSet:
    """The evaluation states of ``cfg.env`` and their reference values (see the module docstring).

    Deterministic given ``cfg.seed``, so a resumed run rebuilds the same set.
    """
    env = make_single_env(cfg)
    unwrapped, observation_space = env.unwrapped, env.observation_space
    num_actions = int(env.action_space.n)
    gamma, q = float(args.gamma), args.target == "q"
    rng = np.random.default_rng([int(cfg.seed), REFERENCE_STREAM])
    try:
        if isinstance(unwrapped, lecture.NoisyRandomWalk):
            xs = np.linspace(args.grid["low"], args.grid["high"], int(args.grid["points"]))
            if q:
                reference = np.stack([unwrapped.monte_carlo_values(xs, probs, gamma, args.reference_episodes, rng,
                                                                   first_action=a) for a in range(num_actions)], 1)
            else:
                reference = unwrapped.monte_carlo_values(xs, probs, gamma, args.reference_episodes, rng)
            return EvalSet("grid", ["x"], xs[:, None], xs[:, None].astype(np.float32), reference)
        model = discrete_model(cfg, observation_space, unwrapped)
        if model is not None:
            states = np.flatnonzero(~model.terminal)
            values, q_values = policy_evaluation(model, probs, gamma)
            inputs = np.eye(encoder.features, dtype=np.float32)[states]
            return EvalSet("exact", ["state"], states[:, None], inputs, q_values[states] if q else values[states])
        return held_out_set(env, probs, gamma, q, encoder, int(args.grid["points"]), int(args.held_out_rollouts),
                            int(cfg.seed) + HELD_OUT_SEED_OFFSET, rng)
    finally:
        env.close()


def held_out_set(env, probs: np.ndarray, gamma: float, q: bool, encoder: Encoder, points: int, rollouts: int,
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


def evaluate_values(network: nn.Module, eval_set: EvalSet, device: torch.device) -> tuple[float, list[str], list[list]]:
    """The learned values on ``eval_set``: (MSE against the reference over every state (and action),
    values.csv header, values.csv rows)."""
    with torch.no_grad():
        learned = network(torch.as_tensor(eval_set.inputs, device=device)).double().cpu().numpy()
    ref = eval_set.reference
    mse = float(np.mean((learned - ref) ** 2))
    if learned.ndim == 1:
        header = ["v", "v_reference"]
    else:
        actions = range(learned.shape[1])
        header = [f"q_{a}" for a in actions] + [f"q_reference_{a}" for a in actions]
    state_kind = int if eval_set.columns == ["state"] else float
    rows = [[*(state_kind(s) for s in state), *values]
            for state, values in zip(eval_set.rows.tolist(), np.column_stack([learned, ref]).tolist())]
    return mse, eval_set.columns + header, rows


# ----------------------------------------------------------------------------------------------
# the fixed policy
# ----------------------------------------------------------------------------------------------
def sample_actions(cumulative: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """(n,) int64 actions drawn from the policy with cumulative probabilities ``cumulative`` (A,)."""
    return np.minimum(np.searchsorted(cumulative, rng.random(n), side="right"), len(cumulative) - 1)


def make_policy(cfg: DictConfig, state: dict, envs, device: torch.device, epsilon: float, seed: int):
    """The evaluation policy of a td run: the fixed policy pi it evaluated (``algo.policy_probs``).

    ``state``, ``device`` and ``epsilon`` are unused: pi does not depend on the learned values.

    Returns:
        ``act(obs)``: (N, ...) observations to (N,) int64 actions drawn from pi with a generator seeded by ``seed``.
    """
    if not isinstance(envs.single_action_space, spaces.Discrete):
        fail("env", cfg.env.id, "an env with discrete actions for algo=td")
    cumulative = np.cumsum(policy_probs(cfg, int(envs.single_action_space.n)))
    rng = np.random.default_rng(seed)

    def act(obs: np.ndarray) -> np.ndarray:
        return sample_actions(cumulative, rng, len(obs))

    return act


# ----------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------
def train(cfg: DictConfig, run: Run) -> float:
    """Learn V^pi or Q^pi of the fixed policy on ``cfg.env``; returns minus the final value MSE."""
    args = SimpleNamespace(**OmegaConf.to_container(cfg.algo, resolve=True))
    device = resolve_device(cfg.device)
    num_envs = int(args.num_envs)
    envs = make_vec_env(cfg, num_envs)
    encoder = Encoder(envs.single_observation_space)
    num_actions = int(envs.single_action_space.n)
    probs = policy_probs(cfg, num_actions)
    cumulative, probs_t = np.cumsum(probs), torch.as_tensor(probs, dtype=torch.float32, device=device)
    td_lambda = float(args.td_lambda) if args.method == "td_lambda" else METHOD_LAMBDA[args.method]
    gamma = float(args.gamma)
    eval_set = make_eval_set(cfg, args, probs, encoder)
    policy_rng = np.random.default_rng([int(cfg.seed), POLICY_STREAM])  # the actions of pi
    shuffle_rng = np.random.default_rng([int(cfg.seed), SHUFFLE_STREAM])  # minibatch order

    network = ValueNet(encoder.features, num_actions, args.target, list(args.hidden_sizes), args.activation).to(device)
    if args.target_network_frequency == 1:  # plain TD(0): the target is the current network, no copy needed
        target_network = network
    else:  # phi_i of the lecture's fixed point iteration, refreshed every target_network_frequency steps
        target_network = copy.deepcopy(network)
        target_network.requires_grad_(False)
    if args.optimizer == "adam":
        optimizer = make_adam(network, args.learning_rate, args.adam_eps)
    else:
        optimizer = torch.optim.SGD(network.parameters(), lr=args.learning_rate)
    log_interval = int(cfg.logging.log_interval)

    def new_partial() -> dict:
        return {"obs": [], "actions": [], "rewards": []}

    def partial_state(p: dict) -> dict:
        obs = np.asarray(p["obs"], dtype=np.float32).reshape(len(p["obs"]), encoder.features)
        return {"obs": torch.from_numpy(obs), "actions": torch.tensor(p["actions"], dtype=torch.int64),
                "rewards": torch.tensor(p["rewards"], dtype=torch.float64)}

    def checkpoint_state() -> dict:
        return {"network": network.state_dict(), "target_network": target_network.state_dict(),
                "optimizer": optimizer.state_dict(), "policy_rng": policy_rng.bit_generator.state,
                "shuffle_rng": shuffle_rng.bit_generator.state, "updates": updates,
                "next_log_step": next_log_step, "last_eval_step": last_eval_step, "mse": mse,
                "batch": [t.state() for t in finished], "partial": [partial_state(p) for p in partial],
                "obs": torch.from_numpy(np.ascontiguousarray(obs)), "envs": envs.get_state()}

    obs = envs.reset(seed=cfg.seed)
    partial = [new_partial() for _ in range(num_envs)]  # the running trajectory of each env
    finished: list[Trajectory] = []  # ended trajectories not yet trained on
    global_step, updates, next_log_step, last_eval_step, mse = 0, 0, 0, 0, float("nan")
    if run.restored is not None:  # resume: continue exactly where the checkpoint left off
        ckpt = run.restored
        global_step, updates = ckpt["global_step"], ckpt["updates"]
        next_log_step, last_eval_step, mse = ckpt["next_log_step"], ckpt["last_eval_step"], ckpt["mse"]
        load_weights(network, ckpt["network"], "network", cfg)
        load_weights(target_network, ckpt["target_network"], "target_network", cfg)
        optimizer.load_state_dict(ckpt["optimizer"])
        policy_rng.bit_generator.state = ckpt["policy_rng"]
        shuffle_rng.bit_generator.state = ckpt["shuffle_rng"]
        finished = [Trajectory.from_state(t) for t in ckpt["batch"]]
        partial = [{"obs": list(p["obs"].numpy()), "actions": p["actions"].tolist(), "rewards": p["rewards"].tolist()}
                   for p in ckpt["partial"]]
        restored = restore_episodes(envs, ckpt, cfg.env.id)
        if restored is not None:
            obs = restored
        else:  # the simulator could not be saved: its episodes restart, so drop their beginnings
            partial = [new_partial() for _ in range(num_envs)]
        set_rng_state(ckpt["rng"])

    def evaluate() -> float:
        value_mse, header, rows = evaluate_values(network, eval_set, device)
        run.write_csv("values.csv", header, rows)
        run.log(global_step, {"losses/value_mse": value_mse})
        return value_mse

    done = False
    while True:
        # ROLLOUT: one step of every env with the fixed policy pi
        actions = sample_actions(cumulative, policy_rng, num_envs)
        features = encoder(obs)
        step = envs.step(actions)
        global_step += num_envs
        run.log_episodes(global_step, step.episodes)
        for i in range(num_envs):
            p = partial[i]
            p["obs"].append(features[i])
            p["actions"].append(int(actions[i]))
            p["rewards"].append(float(step.reward[i]))
            if step.episode_end[i]:
                finished.append(Trajectory(np.stack(p["obs"]), np.asarray(p["actions"], dtype=np.int64),
                                           np.asarray(p["rewards"], dtype=np.float64),
                                           encoder(step.final_obs[i:i + 1])[0], bool(step.terminated[i])))
                partial[i] = new_partial()
        obs = step.obs

        losses = []  # of the gradient steps in this env step
        while len(finished) >= args.trajectories_per_update and not done:  # several batches may end at once
            # ALGO LOGIC: update_epochs passes of gradient steps on the lambda-returns of the batch
            batch = Batch.from_trajectories(finished[:args.trajectories_per_update])
            finished = finished[args.trajectories_per_update:]
            n = len(batch.rewards)
            bootstraps = td_lambda < 1.0 or bool((batch.end & ~batch.terminated).any())
            obs_t = torch.as_tensor(batch.obs, device=device)
            actions_t = torch.as_tensor(batch.actions, device=device)
            targets_t, stale = None, True
            minibatch = n if args.batch_size is None else min(int(args.batch_size), n)
            for _ in range(args.update_epochs):
                order = np.arange(n) if minibatch == n else shuffle_rng.permutation(n)
                for start in range(0, n, minibatch):
                    if stale:  # targets from the current target network phi_i
                        next_values = (successor_values(target_network, batch, probs_t, device) if bootstraps
                                       else np.zeros(n))
                        targets = lambda_returns(batch.rewards, next_values, batch.terminated, batch.end, gamma,
                                                 td_lambda)
                        targets_t, stale = torch.as_tensor(targets, dtype=torch.float32, device=device), False
                    mb = torch.as_tensor(order[start:start + minibatch], device=device)
                    predicted = network(obs_t[mb])
                    if args.target == "q":
                        predicted = predicted.gather(1, actions_t[mb, None]).squeeze(1)
                    squared = (predicted - targets_t[mb]) ** 2
                    loss = squared.sum() if args.loss_reduction == "sum" else squared.sum() / args.batch_size
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if args.max_grad_norm is not None:
                        nn.utils.clip_grad_norm_(network.parameters(), args.max_grad_norm)
                    optimizer.step()
                    losses.append(loss.item())
                    updates += 1
                    if updates % args.target_network_frequency == 0:
                        if target_network is not network:
                            target_network.load_state_dict(network.state_dict())
                        stale = bootstraps
            done = global_step >= run.total
            if done or (args.eval_interval > 0
                        and global_step // args.eval_interval > last_eval_step // args.eval_interval):
                last_eval_step = global_step
                mse = evaluate()
        if losses and global_step >= next_log_step:
            next_log_step = global_step + log_interval
            run.log(global_step, {"losses/td_loss": float(np.mean(losses)), "charts/updates": updates})
        if done:  # the first update at or after total_timesteps ends the run
            break

        run.progress(global_step)
        run.maybe_checkpoint(global_step, checkpoint_state)
        run.maybe_evaluate(global_step, lambda: {})
        if run.should_stop:
            break

    run.final_checkpoint(global_step, checkpoint_state)
    envs.close()
    return -mse
