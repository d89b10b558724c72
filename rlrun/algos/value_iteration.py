"""Value iteration: the exact optimal Q-table of a small MDP, computed from its model.

Bellman 1957, "Dynamic Programming"; Sutton & Barto 2018, "Reinforcement Learning: An
Introduction" (2nd ed.), sec. 4.4. This is the backtracking of the CS230 deep RL lecture
("recycling is good"): the return of every action is its immediate reward plus the discounted
best return of the state it leads to, the Bellman optimality equation

    Q*(s, a) = R(s, a) + gamma * sum_s' P(s' | s, a) * max_a' Q*(s', a'),

with value 0 in terminal states. The model (P, R, terminal states, start) comes from
``rlrun.envs.reference.tabular_model``: the lecture MDPs describe themselves, gymnasium's toy-text envs
(FrozenLake, Taxi, CliffWalking) have a ``P`` table; any other env is refused before anything runs.

Two problems, chosen by ``env.max_episode_steps``:

* no step limit (null): repeat the backup above from Q = 0 until no entry changes by more than
  ``algo.tolerance`` in one sweep (or ``algo.max_iterations`` sweeps). gamma = 1 is refused where
  a policy can keep an episode going forever (``rlrun.envs.factory.check_gamma``).
* a step limit H (the lecture's three-minute rule is H = 3): the exact finite-horizon solution by
  backward induction over the steps left, Q_0 = 0 and Q_h = backup(Q_{h-1}) for h = 1..H: Q_h is
  the best return of taking a in s with h steps left, exactly the lecture's tree walked back up.
  The best action can depend on the steps left (with H = 3 and gamma = 1, in the chocolate
  state it is LEFT with 3 steps left, to enter the wrapper state again, and RIGHT with 1), so
  the greedy policy that is played uses the Q_h of the steps actually left.

With ``algo.soft=true`` the max over actions becomes a log-sum-exp, the soft Bellman backup

    Q(s, a) = R(s, a) + gamma * sum_s' P(s' | s, a) * log sum_a' exp Q(s', a'),

whose policy pi(a | s) = exp(Q(s, a) - V(s)) is the maximum-entropy (soft-optimal) policy of the reward
(Ziebart et al. 2008, 2010): the expert whose demonstrations maximum-entropy inverse RL explains exactly.
Its checkpoints play by sampling from pi (seeded) instead of the greedy action.

``global_step`` counts Bellman sweeps over all states (H of them with a step limit);
``total_timesteps`` is not used.

Writes into the run directory (one row per state of the model, which may include states the env
never shows, e.g. the trap's terminal copy of its one state, index 1):
  q_table.csv        state, then one column per action: Q* (with a step limit: Q_H, all steps left)
  v_table.csv        state, value: V*(s) = max_a Q*(s, a) (soft: log sum_a exp Q(s, a))
  policy.csv         state, action, action_name: the greedy action (lowest index on ties; 0 in terminal states)
  policy_by_steps_left.csv   with a step limit only: state, then the greedy action for H, H-1, ..., 1 steps left
  optimal_return.csv start_state, horizon, gamma, optimal_return (V* of the start state), sweeps, converged

Logs ``losses/bellman_residual`` (max |change| of a sweep) and ``charts/optimal_return`` (V of the
start state after the sweep) per sweep, and at the end ``charts/episodic_return`` of
``eval.episodes`` episodes of the greedy policy in the real env; returns their mean raw return.
"""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import torch
from omegaconf import DictConfig, open_dict

from rlrun.core.config import check_bool, check_int, check_number, fail
from rlrun.core.registry import AlgoSpec, register
from rlrun.core.run import Run
from rlrun.core.state import Counters
from rlrun.envs.factory import check_gamma, probe_env
from rlrun.envs.lecture import TabularModel
from rlrun.envs.reference import tabular_model
from rlrun.envs.rollout import evaluate
ACTION_NAMES = {  # unwrapped env class -> its action names, for CSV headers (others get a0, a1, ...)
    "RecyclingChain": ("left", "right"),
    "NoisyRandomWalk": ("left", "right"),
    "FrozenLakeEnv": ("left", "down", "right", "up"),
    "CliffWalkingEnv": ("up", "right", "down", "left"),
    "TaxiEnv": ("south", "north", "east", "west", "pickup", "dropoff"),
    "GridWorld": ("up", "right", "down", "left", "stay"),
}


def validate(cfg: DictConfig) -> None:
    """Check the value-iteration keys and that the env has an exact model; raises ConfigError."""
    a = "algo."
    check_number(cfg, a + "tolerance", low=0, low_open=True)
    max_iterations = check_int(cfg, a + "max_iterations", low=1)
    check_int(cfg, a + "eval_max_episode_steps", low=1)
    check_bool(cfg, a + "soft")
    tabular_model(cfg)  # the env must have discrete states and a model (names env otherwise)
    check_gamma(cfg)
    horizon = cfg.env.max_episode_steps
    if horizon is not None and horizon > max_iterations:
        fail("env.max_episode_steps", horizon, f"at most algo.max_iterations={max_iterations} for value "
             "iteration (a step limit H is solved exactly by H sweeps), or raise algo.max_iterations")


def soft_value(q: np.ndarray) -> np.ndarray:
    """(..., A) Q-values -> (...) log sum_a exp Q(..., a), computed stably."""
    top = q.max(axis=-1)
    return top + np.log(np.exp(q - top[..., None]).sum(axis=-1))


def soft_policy(q: np.ndarray) -> np.ndarray:
    """(..., A) Q-values -> (..., A) the maximum-entropy policy exp(Q - log sum exp Q)."""
    return np.exp(q - soft_value(q)[..., None])


def initial_q(model: TabularModel, soft: bool) -> np.ndarray:
    """(S, A) float64 Q_0 whose value is 0 in every state (no steps left, nothing to earn): zeros, or -log A
    for soft backups (log sum_a exp(-log A) = 0), so that Q_1 = R exactly with a step limit."""
    return np.full(model.rewards.shape, -np.log(model.rewards.shape[1]) if soft else 0.0)


def bellman_backup(q: np.ndarray, model: TabularModel, gamma: float, soft: bool = False) -> np.ndarray:
    """One sweep of the Bellman optimality backup over every state and action.

    Args:
        q: (S, A) float64, the current estimate (or Q_{h-1} with h-1 steps left).
        model: the MDP; terminal states are worth 0.
        gamma: discount in [0, 1].
        soft: back up log sum_a' exp q(s', a') (the soft backup) instead of max_a' q(s', a').

    Returns:
        (S, A) float64, R(s, a) + gamma * sum_s' P(s'|s, a) max_a' q(s', a'); rows of terminal states are 0.
    """
    v = soft_value(q) if soft else q.max(axis=1)
    v[model.terminal] = 0.0
    new = model.rewards + gamma * (model.transitions @ v)
    new[model.terminal] = 0.0
    return new


def solve(model: TabularModel, gamma: float, tolerance: float, max_iterations: int,
          horizon: int | None = None, soft: bool = False) -> tuple[np.ndarray, int, bool]:
    """Value iteration without a run (what :func:`train` computes): Q*, or Q_H with a step limit ``horizon``.

    Returns:
        (S, A) float64 Q-table, the number of sweeps, and whether it converged (residual below
        ``tolerance``; with a horizon: all H sweeps done, or an exact fixed point reached earlier).
    """
    q = initial_q(model, soft)
    limit = max_iterations if horizon is None else min(horizon, max_iterations)
    for sweep in range(1, limit + 1):
        new = bellman_backup(q, model, gamma, soft)
        residual = float(np.abs(new - q).max())
        q = new
        if (residual < tolerance) if horizon is None else residual == 0.0:
            return q, sweep, True
    return q, limit, horizon is not None and limit == horizon


def greedy(q: np.ndarray) -> np.ndarray:
    """(..., A) Q-values -> (...) int64 greedy actions; ties go to the lowest index (as in the lectures)."""
    return np.argmax(q, axis=-1)


def action_names(cfg: DictConfig, n_actions: int) -> list[str]:
    """Names of the env's actions for CSV headers: known ones (left, right; FrozenLake's ...) or a0, a1, ..."""
    if cfg.env.family == "gym":
        names = ACTION_NAMES.get(type(probe_env(cfg)[2]).__name__)
        if names is not None and len(names) == n_actions:
            return list(names)
    return [f"a{i}" for i in range(n_actions)]


def write_tables(run: Run, q: np.ndarray, names: list[str]) -> None:
    """Write ``q_table.csv`` (state, one column per action) and ``policy.csv`` (state, action, action_name)
    for an (S, A) Q-table into the run directory."""
    run.write_csv("q_table.csv", ["state", *names], [[s, *map(float, row)] for s, row in enumerate(q)])
    actions = greedy(q)
    run.write_csv("policy.csv", ["state", "action", "action_name"],
                  [[s, int(a), names[a]] for s, a in enumerate(actions)])


def eval_config(cfg: DictConfig, max_steps: int) -> DictConfig:
    """``cfg`` with a step limit of ``max_steps`` where neither the config nor the gymnasium registration
    has one: a greedy policy can cycle forever (e.g. between two rewarding states at gamma < 1)."""
    if cfg.env.family != "gym" or cfg.env.max_episode_steps is not None \
            or gym.spec(cfg.env.id).max_episode_steps is not None:
        return cfg
    capped = copy.deepcopy(cfg)
    with open_dict(capped):
        capped.env.max_episode_steps = int(max_steps)
    return capped


class Tables:
    """What value iteration has computed, as its checkpoints (and rlrun-eval) hold it: ``q_table`` (S, A) the
    current Q, and with a step limit ``q_by_steps_left`` (K, S, A) Q_h for h = 1..K steps left (None before
    the first sweep), with the ``horizon`` H (None without a limit) and whether the backups are ``soft``."""

    flat_state = True

    def __init__(self, q: np.ndarray, horizon: int | None, soft: bool):
        self.q, self.horizon, self.soft = q, horizon, soft
        self.by_steps_left: list[np.ndarray] = []  # with a step limit: Q_1, Q_2, ... (index h-1 = h steps left)

    def state_dict(self) -> dict:
        """The checkpoint entries q_table, q_by_steps_left, horizon and soft."""
        stack = torch.from_numpy(np.stack(self.by_steps_left)) if self.by_steps_left else None
        return {"q_table": torch.from_numpy(self.q.copy()), "q_by_steps_left": stack, "horizon": self.horizon,
                "soft": self.soft}

    def load_state_dict(self, checkpoint: dict) -> None:
        """Restore the tables from a checkpoint."""
        self.q = checkpoint["q_table"].numpy().copy()
        stack = checkpoint["q_by_steps_left"]
        self.by_steps_left = [] if stack is None else list(stack.numpy().copy())


def train(cfg: DictConfig, run: Run) -> float:
    """Solve ``cfg.env``'s MDP by value iteration, write the tables, play the greedy policy; returns
    the mean raw return of its ``eval.episodes`` episodes."""
    gamma, tolerance = float(cfg.algo.gamma), float(cfg.algo.tolerance)
    max_iterations, soft = int(cfg.algo.max_iterations), bool(cfg.algo.get("soft", False))
    model = tabular_model(cfg)
    num_states, num_actions = model.rewards.shape
    names = action_names(cfg, num_actions)
    horizon = None if cfg.env.max_episode_steps is None else int(cfg.env.max_episode_steps)
    limit = max_iterations if horizon is None else horizon

    # STATE: what a checkpoint holds; a resumed run loads it back here
    tables = Tables(initial_q(model, soft), horizon, soft)
    counters = Counters(converged=False, evaluated=False)
    run.track(tables=tables, counters=counters)
    sweep, residual = run.start_step, float("nan")

    while not counters.converged and sweep < limit:
        # ALGO LOGIC: one Bellman optimality backup of every (state, action)
        new = bellman_backup(tables.q, model, gamma, soft)
        residual = float(np.abs(new - tables.q).max())
        tables.q = new
        sweep += 1
        if horizon is not None:
            tables.by_steps_left.append(new)
            counters.converged = residual == 0.0 or sweep == horizon  # an exact fixed point stays one
        else:
            counters.converged = residual < tolerance
        run.log(sweep, {"losses/bellman_residual": residual, "charts/optimal_return": float(new[model.start].max())})
        if run.end_iteration(sweep):
            run.finish(sweep)
            return run.mean_return()
    if not counters.converged:
        print(f"rlrun: value iteration stopped after algo.max_iterations={max_iterations} sweeps with a Bellman "
              f"residual of {residual:.3g} (algo.tolerance={tolerance:g}); the tables are approximate", flush=True)

    q = tables.q
    v = soft_value(q) if soft else q.max(axis=1)
    optimal_return = float(v[model.start])
    write_tables(run, q, names)
    run.write_csv("v_table.csv", ["state", "value"], [[s, float(x)] for s, x in enumerate(v)])
    if horizon is not None:
        stack = np.stack(tables.by_steps_left)  # (K, S, A), K <= H
        left = range(horizon, 0, -1)
        run.write_csv("policy_by_steps_left.csv", ["state", *(f"steps_left_{h}" for h in left)],
                      [[s, *(names[greedy(stack[min(h, len(stack)) - 1, s])] for h in left)]
                       for s in range(num_states)])
    run.write_csv("optimal_return.csv", ["start_state", "horizon", "gamma", "optimal_return", "sweeps", "converged"],
                  [[model.start, "" if horizon is None else horizon, gamma, optimal_return, sweep,
                    counters.converged]])
    print(f"rlrun: value iteration: V*(start state {model.start}) = {optimal_return:.6g} after {sweep} sweeps",
          flush=True)

    if not counters.evaluated:  # play the greedy policy in the real env, so the run has returns like every other
        state, seed = run.state(), int(cfg.seed) + int(cfg.eval.seed_offset)
        stats = evaluate(eval_config(cfg, int(cfg.algo.eval_max_episode_steps)),
                         lambda env: make_policy(cfg, state, env, torch.device("cpu"), 0.0, seed),
                         int(cfg.eval.episodes), seed)
        run.log_episodes(sweep, list(zip(stats["returns"], stats["lengths"])))
        counters.evaluated = True
    run.finish(sweep)
    return run.mean_return()


def state_indices(obs: np.ndarray, space: gym.Space) -> np.ndarray:
    """(N,) int64 state indices of a batch of observations: Discrete indices as they are, one-hot vectors
    (the lecture envs' ``one_hot``) by their argmax."""
    if isinstance(space, gym.spaces.Discrete):
        return np.asarray(obs, dtype=np.int64).reshape(len(obs))
    return np.asarray(obs).reshape(len(obs), -1).argmax(axis=1)


def make_policy(cfg: DictConfig, state: dict, envs, device: torch.device, epsilon: float, seed: int):
    """The policy of a value-iteration checkpoint (``epsilon`` and ``device`` are unused): greedy, or with
    ``algo.soft`` the soft-optimal policy, sampling a ~ exp(Q(s, a) - V(s)) with a generator seeded by ``seed``.

    Without a step limit it acts on Q*(s, ·). With a step limit H it acts on Q_h(s, ·) for the h = H - t
    steps left after the t steps the env has taken in its current episode (read from the VecEnv's
    episode lengths; where it keeps none, all H steps are assumed left).

    Returns:
        ``act(obs)``: (N,) int64 state indices (or (N, S) one-hot vectors) to (N,) int64 actions.

    Raises:
        ConfigError: if the env observes neither state indices nor one-hot vectors of the checkpoint's table.
    """
    q = state["q_table"].numpy()
    space = envs.single_observation_space
    # a model may have states the env never shows (the trap's terminal copy of its one state)
    size = int(space.n) if isinstance(space, gym.spaces.Discrete) else (
        int(space.shape[0]) if isinstance(space, gym.spaces.Box) and len(space.shape) == 1 else None)
    if size is None or size > q.shape[0]:
        fail("env", cfg.env.name, f"an env with at most {q.shape[0]} discrete states (indices or one-hot vectors) "
             f"for this Q-table (it has {space})")
    stack = None if state.get("q_by_steps_left") is None else state["q_by_steps_left"].numpy()
    horizon = state.get("horizon")
    rng = np.random.default_rng(seed)

    def choose(values: np.ndarray) -> np.ndarray:
        if not state.get("soft", False):
            return greedy(values)
        cumulative = soft_policy(values).cumsum(axis=1)
        return np.minimum((cumulative < rng.random((len(values), 1))).sum(axis=1), values.shape[1] - 1)

    def act(obs: np.ndarray) -> np.ndarray:
        s = state_indices(obs, space)
        if stack is None:
            return choose(q[s])
        steps_done = envs.episode_lengths
        steps_left = np.clip(horizon - steps_done, 1, len(stack))
        return choose(stack[steps_left - 1, s])

    return act


register(AlgoSpec("value_iteration", validate, train, make_policy,
                  eval_policy="the greedy policy (with algo.soft, samples of the soft-optimal one)"))
