"""Policy and value networks: PPO's actor-critic, the policies and critics of REINFORCE and the lectures'
value MLPs.

Observations may be state indices (``Discrete``, one-hot encoded inside), vectors (1-D Box, MLPs) or
(C, H, W) uint8 frames (the Nature CNN trunk of Mnih et al. 2015). Output layers are orthogonally
initialized with a small gain for policies (a near-uniform initial policy) and gain 1 for values
(Huang et al. 2022, "The 37 Implementation Details of PPO", detail 2).
"""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import nn
from torch.distributions import Categorical, Distribution, Normal

from rlrun.nn.networks import MLP, NATURE_FEATURES, NatureTrunk, OneHot, orthogonal_init

POLICY_FAMILIES = ["auto", "categorical", "gaussian", "logistic"]  # what make_policy_head builds
POLICY_HEAD_GAIN = 0.01  # orthogonal gain of a policy's output layer: a near-uniform initial policy
VALUE_HEAD_GAIN = 1.0  # orthogonal gain of value and Q output layers


def observation_kind(space: gym.Space) -> str | None:
    """'index' (Discrete states, one-hot encoded), 'vector' (1-D Box), 'pixels' ((C, H, W) uint8) or None."""
    if isinstance(space, spaces.Discrete):
        return "index"
    if isinstance(space, spaces.Box) and len(space.shape) == 1:
        return "vector"
    if isinstance(space, spaces.Box) and len(space.shape) == 3 and space.dtype == np.uint8:
        return "pixels"
    return None


class ActorCritic(nn.Module):
    """PPO's actor and critic (the ``Agent`` of CleanRL's ppo scripts).

    Pixels (C, H, W): a Nature CNN trunk shared by a categorical policy head and a value head.
    Vectors (D,): separate MLPs for the policy and the value. A Box action space gets a
    diagonal Gaussian policy with a state-independent log standard deviation.

    Args:
        obs_shape: one observation's shape.
        action_space: Discrete(n) or a 1-D Box.
        hidden_sizes, activation: MLP layers for vector observations.
        init_log_std: initial log standard deviation of the Gaussian policy (0 as in CleanRL; RL Zoo's
            MuJoCo settings start at -2, a standard deviation of 0.14 in actions bounded by [-1, 1]).
    """

    def __init__(self, obs_shape: tuple[int, ...], action_space: gym.Space, hidden_sizes: list[int],
                 activation: str, init_log_std: float = 0.0):
        super().__init__()
        self.continuous = isinstance(action_space, spaces.Box)
        out = int(np.prod(action_space.shape)) if self.continuous else int(action_space.n)
        if len(obs_shape) == 3:
            self.trunk: nn.Module = orthogonal_init(NatureTrunk(obs_shape[0], obs_shape[-1]))
            self.actor = orthogonal_init(nn.Linear(NATURE_FEATURES, out), POLICY_HEAD_GAIN)
            self.critic = orthogonal_init(nn.Linear(NATURE_FEATURES, 1), VALUE_HEAD_GAIN)
        else:
            self.trunk = nn.Identity()
            self.actor = orthogonal_init(MLP(obs_shape[0], out, hidden_sizes, activation), last_gain=POLICY_HEAD_GAIN)
            self.critic = orthogonal_init(MLP(obs_shape[0], 1, hidden_sizes, activation), last_gain=VALUE_HEAD_GAIN)
        if self.continuous:
            self.actor_logstd = nn.Parameter(torch.full((1, out), float(init_log_std)))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, *obs_shape) -> (B,) state values."""
        return self.critic(self.trunk(obs)).squeeze(-1)

    def dist_and_value(self, obs: torch.Tensor) -> tuple[Distribution, torch.Tensor]:
        """The action distribution (independent over action dimensions) and (B,) values."""
        features = self.trunk(obs)
        head = self.actor(features)
        value = self.critic(features).squeeze(-1)
        if self.continuous:  # arguments are valid by construction: skip torch's per-call checks
            return Normal(head, self.actor_logstd.expand_as(head).exp(), validate_args=False), value
        return Categorical(logits=head, validate_args=False), value

    def log_prob_and_entropy(self, dist: Distribution, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) log-probabilities of ``actions`` under ``dist`` and (B,) entropies; summed over the action
        dimensions for a Gaussian."""
        if self.continuous:
            return dist.log_prob(actions).sum(-1), dist.entropy().sum(-1)
        return dist.log_prob(actions), dist.entropy()

    def sample_action(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rollout step: (B,) int64 or (B, A) float32 sampled actions, their (B,) log-probabilities (summed
        over dimensions for a Gaussian) and (B,) values; no graph is recorded. For discrete actions it
        samples from the softmax directly, without building a distribution object (the rollout's hot path)."""
        with torch.inference_mode():
            if self.continuous:
                dist, value = self.dist_and_value(obs)
                action = dist.sample()
                return action, dist.log_prob(action).sum(-1), value
            features = self.trunk(obs)
            logits = self.actor(features)
            log_probs = logits - logits.logsumexp(dim=-1, keepdim=True)  # the same numbers as Categorical's
            action = torch.multinomial(torch.softmax(log_probs, dim=-1), 1, replacement=True)  # and its draw
            return action.squeeze(-1), log_probs.gather(-1, action).squeeze(-1), self.critic(features).squeeze(-1)

    def mode(self, obs: torch.Tensor) -> torch.Tensor:
        """(B,) int64 most likely actions or (B, A) float32 Gaussian means, without gradient."""
        with torch.inference_mode():
            dist, _ = self.dist_and_value(obs)
            return dist.mean if self.continuous else dist.probs.argmax(dim=1)


# ---- REINFORCE's policies and critics ---------------------------------------------------------------
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


class CategoricalPolicy(nn.Module):
    """pi(a | s) = softmax(logits(s)) over Discrete(n) actions; logits from :func:`make_body`."""

    def __init__(self, obs_space: gym.Space, n_actions: int, hidden_sizes: Sequence[int], activation: str):
        super().__init__()
        self.logits = make_body(obs_space, n_actions, hidden_sizes, activation, POLICY_HEAD_GAIN)

    def distribution(self, obs: torch.Tensor) -> Distribution:
        """pi(. | s) of (B, *obs_shape) observations."""
        return Categorical(logits=self.logits(obs), validate_args=False)

    def log_prob(self, dist: Distribution, actions: torch.Tensor) -> torch.Tensor:
        """(B,) log pi(a | s) of (B,) int64 actions."""
        return dist.log_prob(actions)

    def entropy(self, dist: Distribution) -> torch.Tensor:
        """(B,) entropies."""
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
    deviation (one learned number per action dimension, initialized to ``init_log_std``).
    Actions are sampled unbounded and clipped to the space only when applied to the env."""

    def __init__(self, obs_space: gym.Space, action_dim: int, hidden_sizes: Sequence[int], activation: str,
                 init_log_std: float):
        super().__init__()
        self.mean = make_body(obs_space, action_dim, hidden_sizes, activation, POLICY_HEAD_GAIN)
        self.log_std = nn.Parameter(torch.full((action_dim,), float(init_log_std)))

    def distribution(self, obs: torch.Tensor) -> Distribution:
        """pi(. | s) of (B, *obs_shape) observations."""
        mean = self.mean(obs)
        return Normal(mean, self.log_std.exp().expand_as(mean), validate_args=False)

    def log_prob(self, dist: Distribution, actions: torch.Tensor) -> torch.Tensor:
        """(B,) log pi(a | s) of (B, A) float32 actions, summed over the action dimensions."""
        return dist.log_prob(actions).sum(-1)

    def entropy(self, dist: Distribution) -> torch.Tensor:
        """(B,) entropies, summed over the action dimensions."""
        return dist.entropy().sum(-1)

    def mode(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, A) float32 means."""
        return self.mean(obs)


def policy_family(name: str, obs_space: gym.Space, action_space: gym.Space) -> str:
    """The policy family that ``name`` (one of POLICY_FAMILIES) gives on these spaces; ``auto`` picks categorical
    for Discrete actions and gaussian for a 1-D Box.

    Raises:
        ValueError: saying what is allowed instead, if the family does not fit the spaces.
    """
    discrete = isinstance(action_space, spaces.Discrete)
    if name == "auto":
        return "categorical" if discrete else "gaussian"
    if name == "categorical" and not discrete:
        raise ValueError(f"gaussian (or auto): the action space {action_space} is continuous")
    if name == "gaussian" and discrete:
        raise ValueError(f"categorical (or auto): the action space {action_space} is discrete")
    if name == "logistic":
        if not (discrete and int(action_space.n) == 2):
            raise ValueError(f"categorical or gaussian (or auto): the logistic policy needs two actions "
                             f"(Discrete(2), 0 = L, 1 = R), the action space is {action_space}")
        if not (isinstance(obs_space, spaces.Box) and obs_space.shape == (1,)):
            raise ValueError(f"categorical (or auto): the logistic policy P(R|x) = sigmoid(w x + b) needs a "
                             f"one-number observation x (a Box of shape (1,)), the observation space is {obs_space}")
    return name


def make_policy_head(name: str, obs_space: gym.Space, action_space: gym.Space, hidden_sizes: Sequence[int],
                     activation: str, init_log_std: float = 0.0,
                     logistic_init: Sequence[float] = (0.0, 0.0)) -> CategoricalPolicy | GaussianPolicy:
    """The policy of family ``name`` (:func:`policy_family`) for these spaces: categorical, Gaussian (starting
    at ``init_log_std``) or the lecture's logistic one (starting at ``logistic_init`` = (w, b)).

    Raises:
        ValueError: as :func:`policy_family`.
    """
    family = policy_family(name, obs_space, action_space)
    if family == "logistic":
        return LogisticPolicy(logistic_init)
    if family == "categorical":
        return CategoricalPolicy(obs_space, int(action_space.n), hidden_sizes, activation)
    return GaussianPolicy(obs_space, int(action_space.shape[0]), hidden_sizes, activation, init_log_std)


class ValueNetwork(nn.Module):
    """V_phi(s): (B, *obs_shape) observations -> (B,) float32 state values (a body of :func:`make_body`)."""

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
        self.discrete = isinstance(action_space, spaces.Discrete)
        self.one_hot = OneHot(int(obs_space.n)) if isinstance(obs_space, spaces.Discrete) else None
        if self.discrete:
            self.net = make_body(obs_space, int(action_space.n), hidden_sizes, activation, VALUE_HEAD_GAIN)
        else:
            self.net = make_body(obs_space, 1, hidden_sizes, activation, VALUE_HEAD_GAIN,
                                 extra_inputs=int(action_space.shape[0]))

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        if self.discrete:
            return self.net(obs).gather(1, actions.long().reshape(-1, 1)).squeeze(1)
        features = obs.float() if self.one_hot is None else self.one_hot(obs)
        return self.net(torch.cat([features, actions.float()], dim=-1)).squeeze(-1)


# ---- the lectures' value MLPs ------------------------------------------------------------------------
class ValueMLP(nn.Module):
    """V_phi (``q=False``: (B, D) -> (B,)) or Q_phi with one output per action (``q=True``: (B, D) -> (B, A)),
    an MLP on float32 features (torch's default initialization)."""

    def __init__(self, in_features: int, num_actions: int, q: bool, hidden_sizes: list[int], activation: str):
        super().__init__()
        self.q = q
        self.mlp = MLP(in_features, num_actions if q else 1, hidden_sizes, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.mlp(x)
        return out if self.q else out.squeeze(-1)


# ---- board games: policies over legal moves, outcome values ------------------------------------------
class MaskedPolicy(nn.Module):
    """pi(a | s) = softmax over the legal moves of logits(s) (illegal moves get probability exactly 0), the move
    policy of a board game (Silver et al. 2016's policy network, as an MLP on the flattened board planes).

    Input: (B, *obs_shape) float32 observations and (B, A) bool legal masks. Raises ValueError from
    :meth:`distribution` if a row has no legal move."""

    def __init__(self, obs_shape: Sequence[int], num_actions: int, hidden_sizes: Sequence[int], activation: str = "relu"):
        super().__init__()
        width = int(np.prod(obs_shape))
        self.logits = nn.Sequential(nn.Flatten(), orthogonal_init(MLP(width, num_actions, hidden_sizes, activation),
                                                                  last_gain=POLICY_HEAD_GAIN))

    def distribution(self, obs: torch.Tensor, legal: torch.Tensor) -> Categorical:
        """pi(. | s) restricted to ``legal``: (B, A) bool."""
        if not bool(legal.any(dim=-1).all()):
            raise ValueError("a position without a legal move has no move distribution")
        return Categorical(logits=self.logits(obs).masked_fill(~legal, float("-inf")), validate_args=False)


class OutcomeValue(nn.Module):
    """v(s) in [-1, 1]: the expected game outcome for the player to move (Silver et al. 2016's value network, an
    MLP with a tanh output). (B, *obs_shape) float32 -> (B,) float32."""

    def __init__(self, obs_shape: Sequence[int], hidden_sizes: Sequence[int], activation: str = "relu"):
        super().__init__()
        width = int(np.prod(obs_shape))
        self.net = nn.Sequential(nn.Flatten(), orthogonal_init(MLP(width, 1, hidden_sizes, activation),
                                                               last_gain=VALUE_HEAD_GAIN))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs).squeeze(-1))


def network_player(policy: MaskedPolicy, device: torch.device, greedy: bool = True):
    """A board-game player (``act(game, state) -> move``, see :mod:`rlrun.envs.board`) of a policy network: its
    most likely legal move, or a sample of its distribution."""
    def act(game, state) -> int:
        with torch.no_grad():
            obs = torch.as_tensor(game.observation(state), device=device).unsqueeze(0)
            legal = torch.as_tensor(game.legal_mask(state), device=device).unsqueeze(0)
            dist = policy.distribution(obs, legal)
            return int(dist.probs.argmax() if greedy else dist.sample())
    return act


def network_evaluator(policy: MaskedPolicy, value: OutcomeValue, device: torch.device):
    """An MCTS evaluator (``evaluate(game, state) -> (priors (A,), value)``, see :mod:`rlrun.envs.mcts`): priors
    pi(. | s) from the policy network, v(s) in [-1, 1] from the value network, for the player to move."""
    def evaluate(game, state) -> tuple[np.ndarray, float]:
        with torch.no_grad():
            obs = torch.as_tensor(game.observation(state), device=device).unsqueeze(0)
            legal = torch.as_tensor(game.legal_mask(state), device=device).unsqueeze(0)
            return policy.distribution(obs, legal).probs[0].cpu().numpy(), float(value(obs)[0])
    return evaluate
