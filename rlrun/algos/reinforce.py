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
from torch.distributions import Categorical, Distribution, Normal

from rlrun.config import check_bool, check_choice, check_int, check_int_list, check_number, fail, get
from rlrun.envs import check_gamma, make_vec_env, probe_env
from rlrun.nets import MLP, NATURE_FEATURES, NatureTrunk, OneHot, load_weights, orthogonal_init
from rlrun.run import Run, resolve_device, set_rng_state

ADV_EPSILON = 1e-8  # added to the weights' standard deviation when normalizing them
POLICY_HEAD_GAIN = 0.01  # orthogonal gain of the policy's output layer: a near-uniform initial policy
VALUE_HEAD_GAIN = 1.0  # orthogonal gain of the value and Q output layers
BASELINES = ["none", "mean", "value"]
CRITICS = ["none", "q", "advantage"]
POLICIES = ["auto", "categorical", "gaussian", "logistic"]
ENV_SEED_SHIFT = 2  # env seeds are 32-bit hashes shifted right by this: below 2^30


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
def env_spaces(cfg: DictConfig) -> tuple[gym.Space, gym.Space]:
    """The observation and action space of one env of ``cfg.env`` (ALE games: described, not built)."""
    if cfg.env.family == "atari":
        size, stack = int(cfg.preprocessing.screen_size), int(cfg.preprocessing.frame_stack)
        return spaces.Box(0, 255, (stack, size, size), np.uint8), spaces.Discrete(2)  # any Discrete will do
    obs_space, action_space, _ = probe_env(cfg)
    return obs_space, action_space


def observation_kind(space: gym.Space) -> str | None:
    """'index' (Discrete states, one-hot encoded), 'vector' (1-D Box), 'pixels' ((C, H, W) uint8) or None."""
    if isinstance(space, spaces.Discrete):
        return "index"
    if isinstance(space, spaces.Box) and len(space.shape) == 1:
        return "vector"
    if isinstance(space, spaces.Box) and len(space.shape) == 3 and space.dtype == np.uint8:
        return "pixels"
    return None


def resolve_policy(name: str, obs_space: gym.Space, action_space: gym.Space) -> str:
    """The policy family for ``algo.policy=name`` on these spaces; ``auto`` picks categorical for
    Discrete actions and gaussian for a 1-D Box. Raises ConfigError naming algo.policy."""
    discrete = isinstance(action_space, spaces.Discrete)
    if name == "auto":
        return "categorical" if discrete else "gaussian"
    if name == "categorical" and not discrete:
        fail("algo.policy", name, f"gaussian (or auto): the action space {action_space} is continuous")
    if name == "gaussian" and discrete:
        fail("algo.policy", name, f"categorical (or auto): the action space {action_space} is discrete")
    if name == "logistic":
        if not (discrete and int(action_space.n) == 2):
            fail("algo.policy", name, f"categorical or gaussian (or auto): the logistic policy needs two actions "
                 f"(Discrete(2), 0 = L, 1 = R), the action space is {action_space}")
        if not (isinstance(obs_space, spaces.Box) and obs_space.shape == (1,)):
            fail("algo.policy", name, f"categorical (or auto): the logistic policy P(R|x) = sigmoid(w x + b) needs "
                 f"a one-number observation x (a Box of shape (1,)), the observation space is {obs_space}")
    return name


def validate(cfg: DictConfig) -> None:
    """Check the REINFORCE keys and how they combine with the env; raises ConfigError."""
    a = "algo."
    num_envs = check_int(cfg, a + "num_envs", low=1)
    episodes = check_int(cfg, a + "trajectories_per_update", low=1)
    if num_envs > episodes:
        fail("algo.num_envs", num_envs, f"at most algo.trajectories_per_update={episodes} (further envs would "
             "only play episodes that no update uses)")
    check_choice(cfg, a + "optimizer", ["adam", "sgd"])
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
    check_number(cfg, a + "log_std_init")
    init = get(cfg, a + "logistic_init")
    items = list(init) if OmegaConf.is_list(init) or isinstance(init, (list, tuple)) else []
    if len(items) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                  for v in items):
        fail("algo.logistic_init", init, "two finite numbers [w, b], e.g. [0.0, 0.0]")
    check_bool(cfg, a + "log_grad_variance")
    policy = check_choice(cfg, a + "policy", POLICIES)
    obs_space, action_space = env_spaces(cfg)
    if observation_kind(obs_space) is None:
        fail("env", cfg.env.name, f"an env whose observations are state indices (Discrete), vectors (1-D Box) or "
             f"(C, H, W) uint8 frames for REINFORCE; {cfg.env.id} observes {obs_space}")
    if not (isinstance(action_space, spaces.Discrete)
            or (isinstance(action_space, spaces.Box) and len(action_space.shape) == 1)):
        fail("env", cfg.env.name, f"an env with Discrete or 1-D Box actions for REINFORCE; {cfg.env.id} has "
             f"{action_space}")
    family = resolve_policy(policy, obs_space, action_space)
    if family == "gaussian" and observation_kind(obs_space) == "pixels":
        fail("algo.policy", policy, "categorical: a Gaussian policy on frames is not supported")


# ---------------------------------------------------------------------------------------------
# policies and value networks
# ---------------------------------------------------------------------------------------------
def make_body(obs_space: gym.Space, out_features: int, hidden_sizes: Sequence[int], activation: str,
              last_gain: float, extra_inputs: int = 0) -> nn.Module:
    """A network from raw observations (plus ``extra_inputs`` numbers concatenated, e.g. an action) to
    (B, out_features) float32, orthogonally initialized (last layer gain ``last_gain``).

    Discrete states are one-hot encoded, vectors go into an MLP, (C, H, W) uint8 frames into the Nature
    CNN trunk (Mnih et al. 2015) and a linear head.
    """
    kind = observation_kind(obs_space)
    if kind == "pixels":
        trunk = orthogonal_init(NatureTrunk(obs_space.shape[0], obs_space.shape[-1]))
        return nn.Sequential(trunk, orthogonal_init(nn.Linear(NATURE_FEATURES, out_features), last_gain))
    width = int(obs_space.n) if kind == "index" else int(obs_space.shape[0])
    mlp = orthogonal_init(MLP(width + extra_inputs, out_features, hidden_sizes, activation), last_gain=last_gain)
    return nn.Sequential(OneHot(width), mlp) if kind == "index" and not extra_inputs else mlp


def encode(obs_space: gym.Space, obs: torch.Tensor) -> torch.Tensor:
    """Observations as the float features that are concatenated with an action: (B, n) one-hot or (B, D)."""
    if isinstance(obs_space, spaces.Discrete):
        return F.one_hot(obs.long().reshape(-1), int(obs_space.n)).float()
    return obs.float()


class CategoricalPolicy(nn.Module):
    """pi(a | s) = softmax(logits(s)) over Discrete(n) actions; logits from :func:`make_body`."""

    def __init__(self, obs_space: gym.Space, n_actions: int, hidden_sizes: Sequence[int], activation: str):
        super().__init__()
        self.logits = make_body(obs_space, n_actions, hidden_sizes, activation, POLICY_HEAD_GAIN)

    def distribution(self, obs: torch.Tensor) -> Distribution:
        return Categorical(logits=self.logits(obs), validate_args=False)

    def log_prob(self, dist: Distribution, actions: torch.Tensor) -> torch.Tensor:
        """(B,) log pi(a | s) of (B,) int64 actions."""
        return dist.log_prob(actions)

    def entropy(self, dist: Distribution) -> torch.Tensor:
        return dist.entropy()

    def mode(self, obs: torch.Tensor) -> torch.Tensor:
        """(B,) int64 most likely actions."""
        return self.logits(obs).argmax(dim=-1)


class LogisticPolicy(CategoricalPolicy):
    """The lecture's two-action policy on a scalar state x ("REINFORCE example"):
    P(R | x) = 1 / (1 + exp(-(w x + b))), P(L | x) = 1 - P(R | x); theta = (w, b).

    It is the categorical policy with logits (0, w x + b) (action 0 = L, 1 = R), so its score is
    grad log P(R | x) = (1 - P(R | x)) (x, 1) and grad log P(L | x) = -P(R | x) (x, 1).

    Args:
        init: the initial (w, b); the lecture starts at w = b = 0 (the uniform policy).

    Parameters: ``w`` and ``b``, scalar float32 tensors (in that order).
    """

    def __init__(self, init: Sequence[float] = (0.0, 0.0)):
        nn.Module.__init__(self)
        self.w = nn.Parameter(torch.tensor(float(init[0])))
        self.b = nn.Parameter(torch.tensor(float(init[1])))

    def logits(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, 1) float32 x -> (B, 2) logits (0, w x + b)."""
        z = self.w * obs.float().reshape(-1) + self.b
        return torch.stack([torch.zeros_like(z), z], dim=-1)

    def prob_right(self, obs: torch.Tensor) -> torch.Tensor:
        """(B,) P(R | x)."""
        return torch.sigmoid(self.w * obs.float().reshape(-1) + self.b)


class GaussianPolicy(nn.Module):
    """A diagonal Gaussian over a 1-D Box: mean from :func:`make_body`, a state-independent log standard
    deviation (one learned number per action dimension, initialized to ``log_std_init``).
    Actions are sampled unbounded and clipped to the space only when applied to the env."""

    def __init__(self, obs_space: gym.Space, action_dim: int, hidden_sizes: Sequence[int], activation: str,
                 log_std_init: float):
        super().__init__()
        self.mean = make_body(obs_space, action_dim, hidden_sizes, activation, POLICY_HEAD_GAIN)
        self.log_std = nn.Parameter(torch.full((action_dim,), float(log_std_init)))

    def distribution(self, obs: torch.Tensor) -> Distribution:
        mean = self.mean(obs)
        return Normal(mean, self.log_std.exp().expand_as(mean), validate_args=False)

    def log_prob(self, dist: Distribution, actions: torch.Tensor) -> torch.Tensor:
        """(B,) log pi(a | s) of (B, A) float32 actions, summed over the action dimensions."""
        return dist.log_prob(actions).sum(-1)

    def entropy(self, dist: Distribution) -> torch.Tensor:
        return dist.entropy().sum(-1)

    def mode(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, A) float32 means."""
        return self.mean(obs)


Policy = CategoricalPolicy | GaussianPolicy


def make_policy_network(cfg: DictConfig, obs_space: gym.Space, action_space: gym.Space) -> Policy:
    """The policy that ``cfg.algo.policy`` names for these spaces."""
    args = cfg.algo
    family = resolve_policy(args.policy, obs_space, action_space)
    hidden, activation = list(args.hidden_sizes), str(args.activation)
    if family == "logistic":
        return LogisticPolicy(list(args.logistic_init))
    if family == "categorical":
        return CategoricalPolicy(obs_space, int(action_space.n), hidden, activation)
    return GaussianPolicy(obs_space, int(action_space.shape[0]), hidden, activation, float(args.log_std_init))


class ValueNetwork(nn.Module):
    """V_phi(s): (B, *obs_shape) observations -> (B,) float32 state values."""

    def __init__(self, obs_space: gym.Space, hidden_sizes: Sequence[int], activation: str):
        super().__init__()
        self.net = make_body(obs_space, 1, hidden_sizes, activation, VALUE_HEAD_GAIN)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).squeeze(-1)


class QNetwork(nn.Module):
    """Q_phi(s, a): (B, *obs_shape) observations and (B,) int64 or (B, A) float32 actions -> (B,) float32.

    Discrete actions: one output per action, the taken one is picked. Continuous actions: the action is
    concatenated to the (one-hot or vector) observation.
    """

    def __init__(self, obs_space: gym.Space, action_space: gym.Space, hidden_sizes: Sequence[int], activation: str):
        super().__init__()
        self.obs_space = obs_space
        self.discrete = isinstance(action_space, spaces.Discrete)
        if self.discrete:
            self.net = make_body(obs_space, int(action_space.n), hidden_sizes, activation, VALUE_HEAD_GAIN)
        else:
            self.net = make_body(obs_space, 1, hidden_sizes, activation, VALUE_HEAD_GAIN,
                                 extra_inputs=int(action_space.shape[0]))

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        if self.discrete:
            return self.net(obs).gather(1, actions.long().reshape(-1, 1)).squeeze(1)
        return self.net(torch.cat([encode(self.obs_space, obs), actions.float()], dim=-1)).squeeze(-1)


# ---------------------------------------------------------------------------------------------
# the estimator
# ---------------------------------------------------------------------------------------------
def returns_to_go(rewards: Sequence[float] | np.ndarray, gamma: float, bootstrap: float = 0.0,
                  terminated: Sequence[bool] | np.ndarray | None = None) -> np.ndarray:
    """Discounted returns-to-go of one trajectory: G_t = sum_{i >= t} gamma^(i - t) r_i.

    Args:
        rewards: (T,) rewards r_0 .. r_{T-1}.
        gamma: discount in [0, 1].
        bootstrap: value of the state after the last step, added as gamma^(T - t) * bootstrap
            (V_phi of a time-limited episode's final observation; 0 for a terminated one).
        terminated: (T,) flags; the sum stops after a step flagged terminated (no bootstrap across it).

    Returns:
        (T,) float64 returns-to-go.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    cut = np.zeros(len(rewards), dtype=bool) if terminated is None else np.asarray(terminated, dtype=bool)
    out = np.empty_like(rewards)
    running = float(bootstrap)
    for t in range(len(rewards) - 1, -1, -1):
        running = float(rewards[t]) + gamma * (0.0 if cut[t] else running)
        out[t] = running
    return out


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


# ---------------------------------------------------------------------------------------------
# collecting a batch of complete episodes
# ---------------------------------------------------------------------------------------------
class Batch(SimpleNamespace):
    """Complete episodes, concatenated in episode order. B = total steps, M = episodes.

    Attributes:
        obs: (B, *obs_shape) observations; actions: (B,) int64 or (B, A) float32 (as sampled).
        rewards: (B,) float64 learning rewards (sign-clipped with preprocessing.clip_rewards).
        terminated: (B,) bool; lengths: (M,) int64 steps per episode.
        truncated: (M,) bool, the episode was cut by a time limit.
        final_obs: (M, *obs_shape) the last observation of each episode (meaningful where truncated).
    """


def collect(envs, policy: Policy, device: torch.device, episodes_wanted: int, seed: int, steps_left: int,
            clip_rewards: bool, continuous: bool, action_space: gym.Space
            ) -> tuple[Batch | None, int, list[tuple[int, float, int]]]:
    """Play the first ``episodes_wanted`` episodes to start after a reset of ``envs`` with ``seed`` to
    their ends, with the current policy (sampled with torch's global generator).

    Stops early after ``steps_left`` agent steps (the run's budget): unfinished episodes are dropped.

    Returns:
        (the batch, or None if no episode finished; agent steps taken, all envs;
        [(steps taken when it ended, raw return, length)] of each batch episode, in order of ending).
    """
    num_envs = envs.num_envs
    obs = envs.reset(seed=seed)
    episode_of = np.full(num_envs, -1, dtype=np.int64)  # batch episode each env plays, -1 = surplus
    first = min(num_envs, episodes_wanted)
    episode_of[:first] = np.arange(first)
    started, running = first, first
    obs_steps, action_steps, reward_steps, term_steps, id_steps = [], [], [], [], []
    finals: dict[int, tuple[bool, np.ndarray]] = {}
    ended: list[tuple[int, float, int]] = []
    steps = 0
    while running > 0 and steps < steps_left:
        with torch.no_grad():
            action = policy.distribution(torch.as_tensor(obs, device=device)).sample()
        env_action = action.cpu().numpy()
        if continuous:
            env_action = np.clip(env_action, action_space.low, action_space.high)
        result = envs.step(env_action)
        steps += num_envs
        obs_steps.append(obs)
        action_steps.append(env_action if not continuous else action.cpu().numpy())
        reward_steps.append(np.sign(result.reward) if clip_rewards else result.reward)
        term_steps.append(result.terminated)
        id_steps.append(episode_of.copy())
        for i, (ret, length) in zip(np.flatnonzero(result.episode_end), result.episodes):
            m = int(episode_of[i])
            if m < 0:
                continue  # a surplus episode: not part of the batch
            finals[m] = (bool(result.truncated[i] and not result.terminated[i]), result.final_obs[i])
            ended.append((steps, ret, length))
            running -= 1
            if started < episodes_wanted:
                episode_of[i] = started
                started += 1
                running += 1
            else:
                episode_of[i] = -1
        obs = result.obs
    if not finals:
        return None, steps, ended
    # flatten time-major and group the steps of each complete batch episode, in time order
    ids = np.stack(id_steps).reshape(-1)
    complete = np.isin(ids, list(finals))
    order = np.flatnonzero(complete)
    order = order[np.argsort(ids[order], kind="stable")]
    episode_ids = sorted(finals)
    obs_all = np.stack(obs_steps)
    batch = Batch(
        obs=obs_all.reshape(-1, *obs_all.shape[2:])[order],
        actions=np.stack(action_steps).reshape(-1, *action_steps[0].shape[1:])[order],
        rewards=np.stack(reward_steps).astype(np.float64).reshape(-1)[order],
        terminated=np.stack(term_steps).reshape(-1)[order],
        lengths=np.bincount(ids[order], minlength=max(episode_ids) + 1)[episode_ids],
        truncated=np.array([finals[m][0] for m in episode_ids]),
        final_obs=np.stack([finals[m][1] for m in episode_ids]),
    )
    return batch, steps, ended


# ---------------------------------------------------------------------------------------------
# evaluation and training
# ---------------------------------------------------------------------------------------------
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


def make_optimizer(name: str, params, learning_rate: float, adam_eps: float) -> torch.optim.Optimizer:
    """Adam (Kingma and Ba 2015) or plain SGD (the lecture's "update theta by SGD") over ``params``."""
    params = list(params)
    if name == "sgd":
        return torch.optim.SGD(params, lr=learning_rate)
    return torch.optim.Adam(params, lr=learning_rate, eps=adam_eps)


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
    optimizer = make_optimizer(args.optimizer, policy.parameters(), args.learning_rate, args.adam_eps)
    critic_optimizer = (make_optimizer(args.optimizer, critics.parameters(), args.value_learning_rate, args.adam_eps)
                        if len(critics) else None)

    def checkpoint_state() -> dict:
        return {"policy": policy.state_dict(), "critics": critics.state_dict(), "optimizer": optimizer.state_dict(),
                "critic_optimizer": critic_optimizer.state_dict() if critic_optimizer else None, "update": update}

    global_step, update = 0, 0
    if run.restored is not None:  # resume at the update boundary of the checkpoint; envs reset every update
        ckpt = run.restored
        global_step, update = ckpt["global_step"], ckpt["update"]
        load_weights(policy, ckpt["policy"], "policy", cfg)
        load_weights(critics, ckpt["critics"], "critics", cfg)
        optimizer.load_state_dict(ckpt["optimizer"])
        if critic_optimizer is not None:
            critic_optimizer.load_state_dict(ckpt["critic_optimizer"])
        set_rng_state(ckpt["rng"])

    while global_step < run.total:
        if args.anneal_lr:  # linear decay to 0 over the run's agent steps
            optimizer.param_groups[0]["lr"] = (1.0 - global_step / run.total) * args.learning_rate

        # ROLLOUT: trajectories_per_update complete episodes with the current policy
        batch, steps, ended = collect(envs, policy, device, args.trajectories_per_update,
                                      env_seed(int(cfg.seed), update + 1), run.total - global_step, clip_rewards,
                                      continuous, action_space)
        for end_step, ret, length in ended:
            run.log_episodes(global_step + end_step, [(ret, length)])
        global_step += steps
        if batch is None:
            break  # the budget ran out before an episode ended
        update += 1

        # ALGO LOGIC: returns-to-go and weights, with the critics as they were before this update
        obs = torch.as_tensor(batch.obs, device=device)
        actions = torch.as_tensor(batch.actions, device=device)
        bounds = np.concatenate([[0], np.cumsum(batch.lengths)])
        with torch.no_grad():
            values = critics["v"](obs) if uses_v else None
            q_values = critics["q"](obs, actions) if uses_q else None
            final_values = np.zeros(len(batch.lengths))
            if uses_v and batch.truncated.any():  # bootstrap time-limited episodes from V_phi(final obs)
                cut = np.flatnonzero(batch.truncated)
                final_values[cut] = critics["v"](torch.as_tensor(batch.final_obs[cut], device=device)).cpu().numpy()
        returns_np = np.concatenate([
            returns_to_go(batch.rewards[lo:hi], args.gamma, final_values[m], batch.terminated[lo:hi])
            for m, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:]))])
        returns = torch.as_tensor(returns_np, dtype=torch.float32, device=device)
        weights = policy_weights(returns, args.baseline, args.critic, values, q_values)
        if args.normalize_advantages and len(weights) > 1:
            weights = (weights - weights.mean()) / (weights.std(unbiased=False) + ADV_EPSILON)

        scalars = {}
        if args.log_grad_variance:  # one backward per trajectory, before the step
            scalars["losses/grad_variance"] = gradient_variance(
                per_trajectory_gradients(policy, obs, actions, weights, batch.lengths))
            if args.baseline != "none" or args.critic != "none":  # plain G_t on the same trajectories: paired
                plain = returns
                if args.normalize_advantages and len(plain) > 1:
                    plain = (plain - plain.mean()) / (plain.std(unbiased=False) + ADV_EPSILON)
                scalars["losses/grad_variance_no_baseline"] = gradient_variance(
                    per_trajectory_gradients(policy, obs, actions, plain, batch.lengths))

        # ALGO LOGIC: ascend g = (1/M) sum_m sum_t weight_t grad log pi(a_t | s_t) (+ entropy bonus)
        num_episodes = len(batch.lengths)
        dist = policy.distribution(obs)
        log_prob = policy.log_prob(dist, actions)
        entropy = policy.entropy(dist).mean()
        pg_loss = -(weights * log_prob).sum() / num_episodes
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
        run.progress(global_step)
        run.maybe_checkpoint(global_step, checkpoint_state)
        run.maybe_evaluate(global_step, lambda: {"policy": policy.state_dict()})
        if run.should_stop:
            break

    run.final_checkpoint(global_step, checkpoint_state)
    envs.close()
    return run.mean_return()
