"""REINFORCE (Williams 1992, "Simple statistical gradient-following algorithms for connectionist
reinforcement learning", Machine Learning 8:229), with a baseline, an actor-critic (Q) or an advantage
actor-critic (Q - V), as in the "Scaling up RL" lecture (slides "Policy gradient theorem",
"REINFORCE", "Reducing variance", "Actor-critic", "Baseline", "Baseline vs. actor-critic, and AAC").

One flat loop per update:

    play ``trajectories_per_update`` complete episodes with the current policy
    -> discounted returns-to-go G_t -> weights (G_t, G_t - b, G_t - V_phi(s_t), Q_phi(s_t, a_t)
    or Q_phi(s_t, a_t) - V_phi(s_t)) -> one step along the policy-gradient estimate
    g = (1/M) sum_m sum_t weight_t grad log pi(a_t | s_t) -> ``value_epochs`` regression steps of
    the learned V_phi / Q_phi on G_t (TD(1) / SARSA(1) regression).

Which episodes form a batch. At the start of an update every env is reset (env seeds derived from
``seed`` and the update number, so an update is reproducible on its own and a resumed run
continues exactly). The first ``trajectories_per_update`` episodes to *start* are the batch: an env
that finishes an episode starts another batch episode while fewer than that many were started, and
otherwise plays on unused until every batch episode has ended. Choosing by start, never by end, keeps
the batch free of a bias towards short episodes; every batch episode is played with the current
policy (on-policy). The unused "surplus" steps still count as agent steps; with one env there are
none. Only batch episodes are logged to charts/episodic_return.

Time limits. An episode cut by a time limit (``truncated``) bootstraps its returns-to-go from the
learned V_phi of its final observation where the run learns one (``baseline=value`` or
``critic=advantage``, the value before this update's regression step); otherwise its returns are
the plain sums of the rewards received (as if the episode had terminated). A ``terminated`` flag
inside an episode (an Atari life loss with ``terminal_on_life_loss``) stops the sum there.

The weights are computed with V_phi and Q_phi as they were before the update's regression steps,
so a learned baseline never depends on the returns it is subtracted from. A collection cut short by
``total_timesteps`` updates on the episodes complete by then. Observations may be state indices
(one-hot encoded), vectors (MLPs) or (C, H, W) uint8 frames (the Nature CNN of Mnih et al. 2015).

Logged per update: losses/policy_loss (-(1/M) sum weight_t log pi), losses/entropy, losses/value_loss
(V_phi) and losses/q_loss (Q_phi) when learned, charts/learning_rate; with ``log_grad_variance``
losses/grad_variance, the trace of the covariance of the M per-trajectory estimates g^m (one backward
pass each), and for a baseline or critic also losses/grad_variance_no_baseline, the same for the
plain weights G_t on the same trajectories (a paired measure of the variance reduction).

``global_step`` counts agent steps summed over envs; on Atari one agent step is 4 frames.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Sequence

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from omegaconf import DictConfig, OmegaConf
from torch import nn

from rlrun.core.config import check_bool, check_choice, check_int, check_int_list, check_number, fail, get
from rlrun.core.registry import AlgoSpec, register
from rlrun.core.run import Run, resolve_device
from rlrun.core.state import Counters, load_weights
from rlrun.data.episodes import collect_episodes, returns_to_go
from rlrun.envs.factory import check_gamma, env_spaces, make_vec_env
from rlrun.nn.heads import QNetwork, ValueNetwork, POLICY_FAMILIES, make_policy_head, observation_kind, policy_family
from rlrun.nn.optim import OPTIMIZERS, make_optimizer

ADV_EPSILON = 1e-8  # added to the weights' standard deviation when normalizing them
BASELINES = ["none", "mean", "value"]
CRITICS = ["none", "q", "advantage"]
ENV_SEED_SHIFT = 2  # env seeds are 32-bit hashes shifted right by this: below 2^30


def validate(cfg: DictConfig) -> None:
    """Check the REINFORCE keys and how they combine with the env; raises ConfigError."""
    a = "algo."
    num_envs = check_int(cfg, a + "num_envs", low=1)
    episodes = check_int(cfg, a + "trajectories_per_update", low=1)
    if num_envs > episodes:
        fail("algo.num_envs", num_envs, f"at most algo.trajectories_per_update={episodes} (further envs would "
             "only play episodes that no update uses)")
    check_choice(cfg, a + "optimizer", OPTIMIZERS)
    check_number(cfg, a + "learning_rate", low=0, low_open=True)
    check_number(cfg, a + "value_learning_rate", low=0, low_open=True)
    check_number(cfg, a + "adam_eps", low=0, low_open=True)
    check_bool(cfg, a + "anneal_lr")
    check_gamma(cfg, a + "gamma")
    baseline = check_choice(cfg, a + "baseline", BASELINES)
    critic = check_choice(cfg, a + "critic", CRITICS)
    if critic != "none" and baseline != "none":
        fail("algo.baseline", baseline, f"none with algo.critic={critic}: the critic's weight Q_phi(s, a) "
             + ("already subtracts its own V_phi(s) (advantage actor-critic)" if critic == "advantage" else
                "replaces the Monte-Carlo return; for Q_phi - V_phi use algo.critic=advantage"))
    check_int(cfg, a + "value_epochs", low=1)
    check_bool(cfg, a + "normalize_advantages")
    check_number(cfg, a + "ent_coef", low=0)
    check_number(cfg, a + "max_grad_norm", low=0, low_open=True, optional=True)
    check_int_list(cfg, a + "hidden_sizes")
    check_choice(cfg, a + "activation", ["tanh", "relu"])
    check_number(cfg, a + ("init_log_std" if "init_log_std" in cfg.algo else "log_std_init"))  # older runs: old name
    init = get(cfg, a + "logistic_init")
    items = list(init) if OmegaConf.is_list(init) or isinstance(init, (list, tuple)) else []
    if len(items) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                  for v in items):
        fail("algo.logistic_init", init, "two finite numbers [w, b], e.g. [0.0, 0.0]")
    check_bool(cfg, a + "log_grad_variance")
    policy = check_choice(cfg, a + "policy", POLICY_FAMILIES)
    obs_space, action_space = env_spaces(cfg)
    if observation_kind(obs_space) is None:
        fail("env", cfg.env.name, f"an env whose observations are state indices (Discrete), vectors (1-D Box) or "
             f"(C, H, W) uint8 frames for REINFORCE; {cfg.env.id} observes {obs_space}")
    if not (isinstance(action_space, spaces.Discrete)
            or (isinstance(action_space, spaces.Box) and len(action_space.shape) == 1)):
        fail("env", cfg.env.name, f"an env with Discrete or 1-D Box actions for REINFORCE; {cfg.env.id} has "
             f"{action_space}")
    try:
        family = policy_family(policy, obs_space, action_space)
    except ValueError as exc:
        fail("algo.policy", policy, str(exc))
    if family == "gaussian" and observation_kind(obs_space) == "pixels":
        fail("algo.policy", policy, "categorical: a Gaussian policy on frames is not supported")


def make_policy_network(cfg: DictConfig, obs_space: gym.Space, action_space: gym.Space) -> nn.Module:
    """The policy that ``cfg.algo.policy`` names for these spaces (rlrun.nn.heads.make_policy_head)."""
    a = cfg.algo
    init_log_std = a.init_log_std if "init_log_std" in a else a.log_std_init  # runs saved before the rename
    return make_policy_head(a.policy, obs_space, action_space, list(a.hidden_sizes), str(a.activation),
                            float(init_log_std), list(a.logistic_init))


def policy_weights(returns: torch.Tensor, baseline: str = "none", critic: str = "none",
                   values: torch.Tensor | None = None, q_values: torch.Tensor | None = None) -> torch.Tensor:
    """The weight of each score vector in g = sum_t weight_t grad log pi(a_t | s_t) ("Scaling up RL").

    ===============  =================  =======================================================
    baseline         critic             weight_t
    ===============  =================  =======================================================
    none             none               G_t (REINFORCE)
    mean             none               G_t - mean(G) over every step of the batch (one number)
    value            none               G_t - V_phi(s_t) (REINFORCE with baseline: unbiased)
    none             q                  Q_phi(s_t, a_t) (actor-critic: biased, less variance)
    none             advantage          Q_phi(s_t, a_t) - V_phi(s_t) (advantage actor-critic)
    ===============  =================  =======================================================

    Args:
        returns: (B,) float32 returns-to-go G_t.
        values, q_values: (B,) V_phi(s_t) and Q_phi(s_t, a_t), where the combination needs them.

    Returns:
        (B,) float32 weights (no gradient flows into V_phi or Q_phi).

    Raises:
        ValueError: an unknown or refused combination (validate() reports these as ConfigErrors).
    """
    if critic == "none":
        if baseline == "none":
            return returns
        if baseline == "mean":
            return returns - returns.mean()
        if baseline == "value":
            return returns - values.detach()
    elif baseline == "none":
        if critic == "q":
            return q_values.detach()
        if critic == "advantage":
            return (q_values - values).detach()
    raise ValueError(f"baseline={baseline!r} with critic={critic!r} is not a REINFORCE weighting")


def policy_gradient_estimate(policy: nn.Module, obs: torch.Tensor, actions: torch.Tensor,
                             weights: torch.Tensor) -> torch.Tensor:
    """The policy-gradient estimate g = sum_i weights_i * grad_theta log pi_theta(a_i | s_i) (the policy
    gradient theorem; the score vectors by autodiff), summed (not averaged) over the given samples.

    Args:
        policy: a policy of this module (``distribution`` and ``log_prob``).
        obs: (B, *obs_shape) states; actions: (B,) int64 or (B, A) float32; weights: (B,) float32.

    Returns:
        (d,) float32: the gradient, flattened over ``policy.parameters()`` in their order
        ((dJ/dw, dJ/db) for the logistic policy).
    """
    params = [p for p in policy.parameters() if p.requires_grad]
    dist = policy.distribution(obs)
    objective = (weights.detach() * policy.log_prob(dist, actions)).sum()
    grads = torch.autograd.grad(objective, params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)])


def per_trajectory_gradients(policy: nn.Module, obs: torch.Tensor, actions: torch.Tensor, weights: torch.Tensor,
                             lengths: Sequence[int]) -> torch.Tensor:
    """The gradient estimates g^m = sum_t weight_t grad log pi(a_t | s_t) of each trajectory m of a batch
    (one backward pass each).

    Args:
        obs, actions, weights: the batch's B steps, trajectories one after another.
        lengths: (M,) steps of each trajectory, summing to B.

    Returns:
        (M, d) float32, one flattened gradient per trajectory.
    """
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return torch.stack([policy_gradient_estimate(policy, obs[lo:hi], actions[lo:hi], weights[lo:hi])
                        for lo, hi in zip(bounds[:-1], bounds[1:])])


def gradient_variance(per_trajectory: torch.Tensor) -> float:
    """Trace of the covariance of per-trajectory gradient estimates: mean_m ||g^m - mean(g)||^2.

    Args:
        per_trajectory: (M, d) gradient estimates g^m, one per trajectory.

    Returns:
        The (biased, 1/M) total variance; 0 for M = 1.
    """
    return float(((per_trajectory - per_trajectory.mean(dim=0)) ** 2).sum(dim=1).mean())


def env_seed(seed: int, update: int) -> int:
    """The env seed of update ``update`` (1-based) of a run with ``seed``: a hash of the pair, so runs
    with neighbouring seeds do not replay each other's episodes. Below 2^30, so that sub-env i's
    ``seed + i`` fits the 32-bit signed seeds of ALE."""
    return int(np.random.SeedSequence([seed, update]).generate_state(1)[0]) >> ENV_SEED_SHIFT


def make_policy(cfg: DictConfig, state: dict, envs, device: torch.device, epsilon: float, seed: int):
    """The evaluation policy of a REINFORCE checkpoint: the policy's mode (argmax, Gaussian mean clipped to
    the action space, or R where P(R | x) > 0.5). ``epsilon`` and ``seed`` are unused.

    Returns:
        ``act(obs)``: (N, *obs_shape) observations to (N,) int64 or (N, A) float32 actions.
    """
    space = envs.single_action_space
    policy = make_policy_network(cfg, envs.single_observation_space, space).to(device)
    load_weights(policy, state["policy"], "policy", cfg)
    policy.eval()

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            action = policy.mode(torch.as_tensor(obs, device=device)).cpu().numpy()
        return np.clip(action, space.low, space.high) if isinstance(space, spaces.Box) else action

    return act


def train(cfg: DictConfig, run: Run) -> float:
    """Train REINFORCE (with ``algo.baseline`` / ``algo.critic``) on ``cfg.env``; returns the mean raw
    return of the last episodes."""
    args = SimpleNamespace(**OmegaConf.to_container(cfg.algo, resolve=True))
    device = resolve_device(cfg.device)
    envs = make_vec_env(cfg, args.num_envs)
    obs_space, action_space = envs.single_observation_space, envs.single_action_space
    continuous = isinstance(action_space, spaces.Box)
    clip_rewards = bool(cfg.preprocessing.clip_rewards)

    policy = make_policy_network(cfg, obs_space, action_space).to(device)
    uses_v = args.baseline == "value" or args.critic == "advantage"
    uses_q = args.critic in ("q", "advantage")
    critics = nn.ModuleDict()
    if uses_v:
        critics["v"] = ValueNetwork(obs_space, args.hidden_sizes, args.activation)
    if uses_q:
        critics["q"] = QNetwork(obs_space, action_space, args.hidden_sizes, args.activation)
    critics.to(device)
    # the per-tensor Adam, as REINFORCE has always used (the fused one rounds differently)
    optimizer = make_optimizer(args.optimizer, policy.parameters(), args.learning_rate, args.adam_eps, fused=False)
    critic_optimizer = (make_optimizer(args.optimizer, critics.parameters(), args.value_learning_rate, args.adam_eps,
                                       fused=False) if len(critics) else None)

    def sample(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # actions as sampled, and as applied
        with torch.no_grad():
            action = policy.distribution(torch.as_tensor(obs, device=device)).sample().cpu().numpy()
        return action, np.clip(action, action_space.low, action_space.high) if continuous else action

    # STATE: what a checkpoint holds; a resumed run continues at the update boundary (envs reset every update)
    counters = Counters(update=0)
    run.track(policy=policy, critics=critics, optimizer=optimizer, critic_optimizer=critic_optimizer,
              counters=counters)
    global_step = run.start_step

    while global_step < run.total:
        if args.anneal_lr:  # linear decay to 0 over the run's agent steps
            optimizer.param_groups[0]["lr"] = (1.0 - global_step / run.total) * args.learning_rate

        # ROLLOUT: trajectories_per_update complete episodes with the current policy
        batch, steps, ended = collect_episodes(envs, sample, args.trajectories_per_update,
                                               env_seed(int(cfg.seed), counters.update + 1), run.total - global_step,
                                               clip_rewards)
        for end_step, ret, length in ended:
            run.log_episodes(global_step + end_step, [(ret, length)])
        global_step += steps
        if batch is None:
            break  # the budget ran out before an episode ended
        counters.update += 1

        # ALGO LOGIC: returns-to-go and weights, with the critics as they were before this update
        obs = torch.as_tensor(batch.obs, device=device)
        actions = torch.as_tensor(batch.actions, device=device)
        with torch.no_grad():
            values = critics["v"](obs) if uses_v else None
            q_values = critics["q"](obs, actions) if uses_q else None
            final_values = np.zeros(len(batch))
            if uses_v and batch.truncated.any():  # bootstrap time-limited episodes from V_phi(final obs)
                cut = np.flatnonzero(batch.truncated)
                final_values[cut] = critics["v"](torch.as_tensor(batch.final_obs[cut], device=device)).cpu().numpy()
        bounds = batch.bounds
        returns_np = np.concatenate([
            returns_to_go(batch.rewards[lo:hi], args.gamma, final_values[m], batch.terminated[lo:hi])
            for m, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:]))])
        returns = torch.as_tensor(returns_np, dtype=torch.float32, device=device)
        weights = normalized(policy_weights(returns, args.baseline, args.critic, values, q_values),
                             args.normalize_advantages)

        scalars = {}
        if args.log_grad_variance:  # one backward per trajectory, before the step
            scalars["losses/grad_variance"] = gradient_variance(
                per_trajectory_gradients(policy, obs, actions, weights, batch.lengths))
            if args.baseline != "none" or args.critic != "none":  # plain G_t on the same trajectories: paired
                scalars["losses/grad_variance_no_baseline"] = gradient_variance(per_trajectory_gradients(
                    policy, obs, actions, normalized(returns, args.normalize_advantages), batch.lengths))

        # ALGO LOGIC: ascend g = (1/M) sum_m sum_t weight_t grad log pi(a_t | s_t) (+ entropy bonus)
        dist = policy.distribution(obs)
        log_prob = policy.log_prob(dist, actions)
        entropy = policy.entropy(dist).mean()
        pg_loss = -(weights * log_prob).sum() / len(batch)
        loss = pg_loss - args.ent_coef * entropy
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if args.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(policy.parameters(), args.max_grad_norm)
        optimizer.step()

        # ALGO LOGIC: regress V_phi and Q_phi on the returns-to-go (TD(1) / SARSA(1)), full batch
        if critic_optimizer is not None:
            for _ in range(args.value_epochs):
                v_loss = F.mse_loss(critics["v"](obs), returns) if uses_v else None
                q_loss = F.mse_loss(critics["q"](obs, actions), returns) if uses_q else None
                critic_optimizer.zero_grad(set_to_none=True)
                sum(x for x in (v_loss, q_loss) if x is not None).backward()
                critic_optimizer.step()
            if uses_v:
                scalars["losses/value_loss"] = v_loss.item()
            if uses_q:
                scalars["losses/q_loss"] = q_loss.item()

        run.log(global_step, {"charts/learning_rate": optimizer.param_groups[0]["lr"],
                              "losses/policy_loss": pg_loss.item(), "losses/entropy": entropy.item(), **scalars})
        if run.end_iteration(global_step):
            break

    run.finish(global_step)
    envs.close()
    return run.mean_return()


def normalized(weights: torch.Tensor, normalize: bool) -> torch.Tensor:
    """(B,) ``weights`` scaled to mean 0 and standard deviation 1 when ``normalize`` (and B > 1), else as they are."""
    if normalize and len(weights) > 1:
        return (weights - weights.mean()) / (weights.std(unbiased=False) + ADV_EPSILON)
    return weights


register(AlgoSpec("reinforce", validate, train, make_policy))
