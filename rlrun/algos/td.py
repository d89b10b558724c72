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
from types import SimpleNamespace

import numpy as np
import torch
from gymnasium import spaces
from omegaconf import DictConfig, OmegaConf
from torch import nn

from rlrun.core.config import check_choice, check_int, check_int_list, check_number, check_that, fail, get
from rlrun.core.registry import AlgoSpec, register
from rlrun.core.run import Run, resolve_device
from rlrun.core.state import Counters
from rlrun.data.episodes import EpisodeBatch, EpisodeCollector, lambda_returns
from rlrun.envs import lecture
from rlrun.envs.factory import check_gamma, make_single_env, make_vec_env, probe_env
from rlrun.envs.reference import EvalSet, discrete_model, make_eval_set, sample_actions, states_never_ending
from rlrun.nn.heads import ValueMLP
from rlrun.nn.networks import ObsEncoder
from rlrun.nn.optim import OPTIMIZERS, make_optimizer

METHOD_LAMBDA = {"td1": 1.0, "td0": 0.0}  # the lambda of the named methods; td_lambda reads algo.td_lambda
PROBS_TOLERANCE = 1e-6  # policy_probs must sum to 1 within this
POLICY_STREAM, SHUFFLE_STREAM = 1, 2  # independent random streams under cfg.seed (the reference's is 3)


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
    check_choice(cfg, a + "optimizer", OPTIMIZERS)
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


def successor_values(network: nn.Module, batch: EpisodeBatch, probs: torch.Tensor, device: torch.device) -> np.ndarray:
    """(n,) float64 values of each step's successor under ``network`` (the target network), without gradients.

    V: V(s_{t+1}). Q (SARSA): Q(s_{t+1}, a_{t+1}) inside a trajectory, sum_a pi(a) Q(s_T, a) at its end.
    """
    with torch.no_grad():
        out = network(torch.as_tensor(batch.next_obs, device=device))
        if out.ndim == 2:
            expected = out @ probs
            taken = out.gather(1, torch.as_tensor(np.maximum(batch.next_actions, 0), device=device)[:, None]).squeeze(1)
            out = torch.where(torch.as_tensor(batch.ends, device=device), expected, taken)
    return out.double().cpu().numpy()


def fit_batch(network: nn.Module, target_network: nn.Module, optimizer: torch.optim.Optimizer, batch: EpisodeBatch,
              args: SimpleNamespace, td_lambda: float, probs: torch.Tensor, rng: np.random.Generator,
              counters: Counters, device: torch.device) -> list[float]:
    """``update_epochs`` passes of gradient steps (minibatches of ``batch_size`` samples, or the whole batch)
    on the lambda-returns of ``batch`` from the target network, refreshed every ``target_network_frequency``
    steps (``counters.updates`` counts them); returns the losses."""
    n, losses, gamma = len(batch.rewards), [], float(args.gamma)
    ends = batch.ends
    terminated = batch.terminated & ends  # only a trajectory's last step stops the sum
    bootstraps = td_lambda < 1.0 or bool((ends & ~terminated).any())
    obs_t, actions_t = torch.as_tensor(batch.obs, device=device), torch.as_tensor(batch.actions, device=device)
    targets_t, stale = None, True
    minibatch = n if args.batch_size is None else min(int(args.batch_size), n)
    for _ in range(args.update_epochs):
        order = np.arange(n) if minibatch == n else rng.permutation(n)
        for start in range(0, n, minibatch):
            if stale:  # targets from the current target network phi_i
                next_values = successor_values(target_network, batch, probs, device) if bootstraps else np.zeros(n)
                targets = lambda_returns(batch.rewards, next_values, terminated, ends, gamma, td_lambda)
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
            counters.updates += 1
            if counters.updates % args.target_network_frequency == 0:
                if target_network is not network:
                    target_network.load_state_dict(network.state_dict())
                stale = bootstraps
    return losses


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


def train(cfg: DictConfig, run: Run) -> float:
    """Learn V^pi or Q^pi of the fixed policy on ``cfg.env``; returns minus the final value MSE."""
    args = SimpleNamespace(**OmegaConf.to_container(cfg.algo, resolve=True))
    device = resolve_device(cfg.device)
    num_envs = int(args.num_envs)
    envs = make_vec_env(cfg, num_envs)
    encoder = ObsEncoder(envs.single_observation_space)
    num_actions = int(envs.single_action_space.n)
    probs = policy_probs(cfg, num_actions)
    cumulative, probs_t = np.cumsum(probs), torch.as_tensor(probs, dtype=torch.float32, device=device)
    td_lambda = float(args.td_lambda) if args.method == "td_lambda" else METHOD_LAMBDA[args.method]
    eval_set = make_eval_set(cfg, probs, float(args.gamma), args.target == "q", encoder,
                             (args.grid["low"], args.grid["high"], args.grid["points"]), args.reference_episodes,
                             args.held_out_rollouts)
    policy_rng = np.random.default_rng([int(cfg.seed), POLICY_STREAM])  # the actions of pi
    shuffle_rng = np.random.default_rng([int(cfg.seed), SHUFFLE_STREAM])  # minibatch order

    network = ValueMLP(encoder.features, num_actions, args.target == "q", list(args.hidden_sizes),
                       args.activation).to(device)
    if args.target_network_frequency == 1:  # plain TD(0): the target is the current network, no copy needed
        target_network = network
    else:  # phi_i of the lecture's fixed point iteration, refreshed every target_network_frequency steps
        target_network = copy.deepcopy(network)
        target_network.requires_grad_(False)
    optimizer = make_optimizer(args.optimizer, network.parameters(), args.learning_rate, args.adam_eps)
    log_interval = int(cfg.logging.log_interval)

    # STATE: what a checkpoint holds; a resumed run loads it back here
    envs.reset(seed=cfg.seed)
    collector = EpisodeCollector(num_envs, encoder.features)  # the running and the ended, untrained trajectories
    counters = Counters(updates=0, next_log_step=0, last_eval_step=0, mse=float("nan"))
    run.track(network=network, target_network=target_network, optimizer=optimizer, policy_rng=policy_rng,
              shuffle_rng=shuffle_rng, counters=counters, collector=collector, envs=envs)
    global_step, obs = run.start_step, envs.obs
    if run.resumed and not envs.episodes_restored:  # the simulator could not be saved: drop the cut episodes
        collector.drop_partial()

    def evaluate() -> None:
        counters.last_eval_step = global_step
        counters.mse, header, rows = evaluate_values(network, eval_set, device)
        run.write_csv("values.csv", header, rows)
        run.log(global_step, {"losses/value_mse": counters.mse})

    done = False
    while not done:
        # ROLLOUT: one step of every env with the fixed policy pi
        actions = sample_actions(cumulative, policy_rng, num_envs)
        features = encoder(obs)
        step = envs.step(actions)
        global_step += num_envs
        run.log_episodes(global_step, step.episodes)
        collector.add(features, actions, step.reward, step.episode_end, step.terminated,
                      lambda i: encoder(step.final_obs[i:i + 1])[0])
        obs = step.obs

        # ALGO LOGIC: once trajectories_per_update have ended, fit their lambda-returns (several batches may end at once)
        losses = []
        while len(collector.finished) >= args.trajectories_per_update and not done:
            batch = collector.take(args.trajectories_per_update)
            losses += fit_batch(network, target_network, optimizer, batch, args, td_lambda, probs_t, shuffle_rng,
                                counters, device)
            done = global_step >= run.total  # the first update at or after total_timesteps ends the run
            if done or (args.eval_interval > 0
                        and global_step // args.eval_interval > counters.last_eval_step // args.eval_interval):
                evaluate()
        if losses and global_step >= counters.next_log_step:
            counters.next_log_step = global_step + log_interval
            run.log(global_step, {"losses/td_loss": float(np.mean(losses)), "charts/updates": counters.updates})
        if not done and run.end_iteration(global_step):
            break

    run.finish(global_step)
    envs.close()
    return -counters.mse


register(AlgoSpec("td", validate, train, make_policy, eval_policy="the fixed policy pi (algo.policy_probs)",
                  metric="minus the mean squared error of the learned values against the reference"))
