"""Q-learning: Watkins 1989 (PhD thesis, Cambridge); Watkins & Dayan 1992, "Q-learning",
Machine Learning 8:279. Tabular, with epsilon-greedy exploration, or with the CS230 lecture's
"vanilla" Q-network (no replay memory, no separate target network).

Reads top to bottom like CleanRL's ``dqn.py``; hyperparameters come from ``cfg.algo`` (see
configs/algo/q_learning.yaml), then one flat loop:

    act epsilon-greedily (ties to the lowest action index) -> step the envs -> move Q(s, a) towards
    the target y = r + gamma * max_a' Q(s', a') of each transition

y does not bootstrap where the transition terminated (y = r), and bootstraps from the episode's
final observation where it was truncated by a step limit.

``algo.q_function``:

* ``table``: Q is an (S, A) float64 table over the env's discrete states (state indices as
  observations: recycling, trap, FrozenLake-v1, ...), started at ``algo.initial_q``, updated by
  Q(s, a) += learning_rate * (y - Q(s, a)) for each transition (in env order).
* ``mlp``: Q(s, .) = an MLP (``algo.hidden_sizes``, ReLU) of a vector observation, e.g. the one-hot
  states of recycling with ``env.kwargs.one_hot=true``. Each step takes one gradient step (SGD or
  Adam) on 0.5 * mean over envs of (y - Q(s, a))^2, y computed by the same network without gradient
  (held fixed). When the observations are one-hot over S states (the lecture envs' ``one_hot``
  option) the network is evaluated on each of them for q_table.csv and policy.csv; for other envs
  (CartPole, ...) no table is written (the run says so).

The lecture's exploration trap: a purely greedy learner (start_e = end_e = 0, learning_rate 1,
initial_q [0.5, 0.4, 0.3]) takes action 0 (learns 0), then action 1 (learns 1) and keeps it,
Q = (0, 1, 0.3) forever; with epsilon = 0.05 a random action finds the 1000.

``global_step`` counts agent steps summed over envs; epsilon decays linearly from ``start_e`` to
``end_e`` over ``exploration_fraction * total_timesteps`` steps. Writes ``q_table.csv`` (state, one
column per action) and ``policy.csv`` (state, greedy action) into the run directory at the end;
logs charts/episodic_return, charts/episodic_length, charts/epsilon and losses/td_error (mean
|y - Q(s, a)| over the transitions since the last log).
"""

from __future__ import annotations

import numbers
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from omegaconf import DictConfig, OmegaConf

from rlrun.algos.dqn import linear_schedule, td_target
from rlrun.algos.value_iteration import action_names, greedy, write_tables
from rlrun.core.config import ConfigError, check_choice, check_int, check_int_list, check_number, fail, get
from rlrun.core.registry import AlgoSpec, register
from rlrun.core.run import Run, resolve_device
from rlrun.core.state import Counters, load_weights
from rlrun.envs.factory import check_gamma, discrete_states, make_vec_env, probe_env
from rlrun.nn.networks import MLP
from rlrun.nn.optim import OPTIMIZERS, make_optimizer


def validate(cfg: DictConfig) -> None:
    """Check the Q-learning keys and that the env fits ``algo.q_function``; raises ConfigError."""
    a = "algo."
    q_function = check_choice(cfg, a + "q_function", ["table", "mlp"])
    check_int(cfg, a + "num_envs", low=1)
    if q_function == "table":  # a step size above 1 overshoots the target
        check_number(cfg, a + "learning_rate", low=0, high=1, low_open=True)
    else:
        check_number(cfg, a + "learning_rate", low=0, low_open=True)
    start_e = check_number(cfg, a + "start_e", low=0, high=1)
    end_e = check_number(cfg, a + "end_e", low=0, high=1)
    check_number(cfg, a + "exploration_fraction", low=0, high=1)
    if end_e > start_e:
        fail("algo.end_e", end_e, f"at most algo.start_e={start_e} (epsilon decays)")
    check_int_list(cfg, a + "hidden_sizes")
    check_choice(cfg, a + "optimizer", OPTIMIZERS)
    check_number(cfg, a + "adam_eps", low=0, low_open=True)
    if q_function == "table":
        try:
            num_states = discrete_states(cfg)
        except ConfigError as err:
            raise ConfigError(f"{err}; or use algo.q_function=mlp for vector observations") from None
        initial_q_table(get(cfg, a + "initial_q"), num_states, discrete_actions(cfg))
    else:
        space = observation_space(cfg)
        if not (isinstance(space, spaces.Box) and len(space.shape) == 1):
            fail("env", cfg.env.name, f"an env with vector observations for algo.q_function=mlp (for recycling "
                 f"or trap set env.kwargs.one_hot=true); {cfg.env.id} has observation space {space}")
        discrete_actions(cfg)
        initial_q = get(cfg, a + "initial_q")
        if not (_is_number(initial_q) and initial_q == 0):
            fail("algo.initial_q", _plain(initial_q), "0 for algo.q_function=mlp (the network starts from its "
                 "random initialization; initial_q sets the table's)")
    check_gamma(cfg)


def observation_space(cfg: DictConfig) -> spaces.Space:
    """One env's observation space (ConfigError naming env for ALE games: pixels, not states or vectors)."""
    if cfg.env.family != "gym":
        fail("env", cfg.env.name, "a gymnasium env with state indices or vector observations for Q-learning "
             "(ALE games have pixel observations: use algo=dqn)")
    return probe_env(cfg)[0]


def discrete_actions(cfg: DictConfig) -> int:
    """The number of actions of ``cfg.env``; ConfigError naming env if its actions are not discrete."""
    space = probe_env(cfg)[1]
    if not isinstance(space, spaces.Discrete):
        fail("env", cfg.env.name, f"an env with discrete actions for Q-learning; {cfg.env.id} has {space}")
    return int(space.n)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def initial_q_table(value: Any, num_states: int, num_actions: int) -> np.ndarray:
    """The (S, A) float64 table that Q-learning starts from, given ``algo.initial_q``: one number for every
    entry, a list of A numbers (one per action, the same in every state) or S lists of A numbers.

    Raises:
        ConfigError: naming algo.initial_q and the shapes allowed.
    """
    value = _plain(value)
    allowed = (f"a number, a list of {num_actions} numbers (one per action) or {num_states} lists of "
               f"{num_actions} numbers (states x actions)")

    def numbers_only(x: Any) -> bool:
        return _is_number(x) or (isinstance(x, (list, tuple)) and all(numbers_only(y) for y in x))

    if not numbers_only(value):
        fail("algo.initial_q", value, allowed)
    try:
        table = np.array(value, dtype=np.float64)
    except ValueError:  # ragged nested lists
        fail("algo.initial_q", value, allowed)
    if not np.isfinite(table).all():
        fail("algo.initial_q", value, "finite numbers")
    if table.ndim == 0:
        return np.full((num_states, num_actions), float(table))
    if table.shape == (num_actions,):
        return np.tile(table, (num_states, 1))
    if table.shape == (num_states, num_actions):
        return table.copy()
    fail("algo.initial_q", value, allowed)


def one_hot_states(cfg: DictConfig) -> int | None:
    """S if ``cfg.env`` observes one-hot vectors over S states (the lecture envs' ``one_hot`` option), else None."""
    space, _, unwrapped = probe_env(cfg)
    one_hot = bool(getattr(unwrapped, "one_hot", False))
    if one_hot and isinstance(space, spaces.Box) and len(space.shape) == 1:
        return int(space.shape[0])
    return None


def make_update(q_network: torch.nn.Module, optimizer: torch.optim.Optimizer, gamma: float):
    """One gradient step of the vanilla Q-network on the transitions of one agent step.

    ``update(obs, actions, rewards, next_obs, terminated)`` takes (N, D) float32 observations, (N,) int64
    actions, (N,) float32 rewards, (N, D) successor observations and (N,) float32 terminated flags;
    minimizes 0.5 * mean (y - Q(s, a))^2 with y = r + gamma * (1 - terminated) * max_a' Q(s', a')
    computed without gradient; returns the (N,) TD errors y - Q(s, a) before the step.
    """

    def update(obs, actions, rewards, next_obs, terminated) -> torch.Tensor:
        with torch.no_grad():
            target = td_target(rewards, terminated, gamma, q_network(next_obs))
        q = q_network(obs).gather(1, actions.unsqueeze(1)).squeeze(1)
        td = target - q
        loss = 0.5 * (td ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return td.detach()

    return update


def network_table(q_network: torch.nn.Module, num_states: int, device: torch.device) -> np.ndarray:
    """(S, A) float64 Q-values of the network on each one-hot state."""
    with torch.inference_mode():
        return q_network(torch.eye(num_states, device=device)).double().cpu().numpy()


def train(cfg: DictConfig, run: Run) -> float:
    """Q-learning on ``cfg.env``; returns the mean raw return of the last episodes."""
    args = SimpleNamespace(**OmegaConf.to_container(cfg.algo, resolve=True))  # plain values: fast in the loop
    device = resolve_device(cfg.device)
    num_envs, gamma, alpha = int(args.num_envs), float(args.gamma), float(args.learning_rate)
    envs = make_vec_env(cfg, num_envs)
    n_actions = int(envs.single_action_space.n)
    names = action_names(cfg, n_actions)
    rng = np.random.default_rng(cfg.seed)  # exploration: epsilon coin flips and random actions
    tabular = args.q_function == "table"
    log_interval = int(cfg.logging.log_interval)

    q_table, q_network, optimizer = None, None, None
    if tabular:
        q_table = initial_q_table(args.initial_q, int(envs.single_observation_space.n), n_actions)
    else:
        q_network = MLP(envs.single_observation_space.shape[0], n_actions, args.hidden_sizes).to(device)
        optimizer = make_optimizer(args.optimizer, q_network.parameters(), args.learning_rate, args.adam_eps)
        update = make_update(q_network, optimizer, gamma)
        table_states = one_hot_states(cfg)

    def network_q_table() -> torch.Tensor | None:
        """(S, A) Q-values of the network on each one-hot state (None for other observations): what rlrun-eval
        and q_table.csv show of an MLP."""
        return None if table_states is None else torch.from_numpy(network_table(q_network, table_states, device))

    # STATE: what a checkpoint holds; a resumed run loads it back here
    envs.reset(seed=cfg.seed)
    counters = Counters(next_log_step=0, td_abs_sum=0.0, td_count=0)
    state = {"q_table": q_table} if tabular else {"q_table": network_q_table, "q_network": q_network}
    run.track(**state, optimizer=optimizer, exploration_rng=rng, counters=counters, envs=envs)
    global_step, obs = run.start_step, envs.obs

    while global_step < run.total:
        t = global_step  # agent steps before this iteration: the schedule's clock
        # ALGO LOGIC: epsilon-greedy action for every env, ties to the lowest action index
        epsilon = linear_schedule(args.start_e, args.end_e, args.exploration_fraction * run.total, t)
        explore = rng.random(num_envs) < epsilon
        actions = rng.integers(0, n_actions, size=num_envs)
        if not explore.all():
            if tabular:
                values = q_table[obs]
            else:
                with torch.inference_mode():
                    values = q_network(torch.as_tensor(obs, device=device)).cpu().numpy()
            actions = np.where(explore, actions, greedy(values))

        step = envs.step(actions)
        global_step += num_envs
        run.log_episodes(global_step, step.episodes)

        # ALGO LOGIC: move Q(s, a) towards r + gamma * max_a' Q(s', a'); s' is the episode's last
        # observation where it ended (final_obs), no bootstrap where it terminated
        if tabular:
            for i in range(num_envs):
                s, a, s_next = int(obs[i]), int(actions[i]), int(step.final_obs[i])
                bootstrap = 0.0 if step.terminated[i] else gamma * q_table[s_next].max()
                delta = float(step.reward[i] + bootstrap - q_table[s, a])
                q_table[s, a] += alpha * delta
                counters.td_abs_sum += abs(delta)
        else:
            td = update(*(torch.as_tensor(x, device=device) for x in (
                obs, actions, step.reward, step.final_obs, step.terminated.astype(np.float32))))
            counters.td_abs_sum += float(td.abs().sum())
        counters.td_count += num_envs
        obs = step.obs

        if global_step >= counters.next_log_step:
            counters.next_log_step = global_step + log_interval
            run.log(global_step, {"losses/td_error": counters.td_abs_sum / counters.td_count, "charts/epsilon": epsilon})
            counters.td_abs_sum, counters.td_count = 0.0, 0
        if run.end_iteration(global_step):
            break

    table = q_table if tabular else network_q_table()
    if table is not None:
        write_tables(run, np.asarray(table), names)
    else:
        print(f"rlrun: no q_table.csv: {cfg.env.id}'s observations are not one-hot states, so the network's "
              "Q-values cannot be listed per state", flush=True)
    run.finish(global_step)
    envs.close()
    return run.mean_return()


def make_policy(cfg: DictConfig, state: dict, envs, device: torch.device, epsilon: float, seed: int):
    """The evaluation policy of a Q-learning checkpoint: epsilon-greedy on its table or network.

    Args:
        cfg: the run's config (``algo.q_function``, ``algo.hidden_sizes``).
        state: a loaded checkpoint (``state["q_table"]`` (S, A) float64, or ``state["q_network"]``).
        envs: the VecEnv to be played (its single observation and action spaces).
        device: where the network runs.
        epsilon: probability of a uniformly random action.
        seed: seed of the random actions.

    Returns:
        ``act(obs) -> actions``: (N,) int64 state indices or (N, D) float32 vectors to (N,) int64 actions
        (greedy ties to the lowest index).

    Raises:
        ConfigError: if the env's observations do not fit the checkpoint's table or network.
    """
    n_actions = int(envs.single_action_space.n)
    space = envs.single_observation_space
    rng = np.random.default_rng(seed)
    if cfg.algo.q_function == "table":
        q = state["q_table"].numpy()
        if not (isinstance(space, spaces.Discrete) and int(space.n) == q.shape[0]):
            fail("env", cfg.env.name, f"an env with {q.shape[0]} discrete states for this Q-table (it has {space})")

        def values(obs: np.ndarray) -> np.ndarray:
            return q[np.asarray(obs, dtype=np.int64).reshape(len(obs))]
    else:
        q_network = MLP(space.shape[0], n_actions, list(cfg.algo.hidden_sizes)).to(device)
        load_weights(q_network, state["q_network"], "q_network", cfg)
        q_network.eval()

        def values(obs: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return q_network(torch.as_tensor(obs, device=device)).cpu().numpy()

    def act(obs: np.ndarray) -> np.ndarray:
        explore = rng.random(len(obs)) < epsilon
        return np.where(explore, rng.integers(0, n_actions, size=len(obs)), greedy(values(obs)))

    return act


register(AlgoSpec("q_learning", validate, train, make_policy, eval_policy="epsilon-greedy", eval_uses_epsilon=True))
