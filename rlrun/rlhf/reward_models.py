"""Learned rewards r(s, a) (or r(s), or r(s, a, s')): an ensemble of reward networks and its checkpoint.

Christiano et al. 2017 ("Deep reinforcement learning from human preferences", NeurIPS), section 2.2:
r is an ensemble of networks, each trained on a bootstrap sample of the labelled pairs by the
Bradley-Terry cross-entropy of segment sums; the reward given to the agent is the ensemble mean,
normalized to zero mean and unit standard deviation. Fitted by rlrun.rlhf.fitting (``algo=reward_model``
from a fixed set of labelled segments, ``algo=pbrl`` with labels arriving while the agent learns) or by
maximum-entropy IRL; optimized by any run through rlrun.rlhf.learned_reward (``reward=learned``).
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from rlrun.core.config import ConfigError
from rlrun.nn.networks import MLP, NATURE_FEATURES, NatureTrunk

REWARD_MODEL_FORMAT = 1  # bumped when the reward-model checkpoint layout changes incompatibly
STD_EPSILON = 1e-8       # added to standard deviations before dividing
SHIFTS = ("mean", "min")  # what the normalized learned reward maps to 0 (RewardEnsemble.fit_normalization)


def action_features_size(action_space: gym.Space) -> int:
    """Width of the action input: n for Discrete(n) (one-hot), A for a 1-D Box.

    Raises:
        ValueError: for other action spaces.
    """
    if isinstance(action_space, spaces.Discrete):
        return int(action_space.n)
    if isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
        return int(action_space.shape[0])
    raise ValueError(f"action space {action_space} is not supported: expected Discrete or a 1-D Box")


class RewardNet(nn.Module):
    """One member: r(s, a), or r(s, a, s') with the next observation -> a scalar.

    Vectors (D,): an MLP on the concatenation of the normalized observation, the action features and,
    with ``use_next_obs``, the normalized next observation. Pixels (C, H, W) uint8: the Nature CNN trunk
    (Mnih et al. 2015), shared by both observations, then an MLP on its 512 features per observation and
    the action features.

    Args:
        obs_shape: one observation's shape.
        action_size: width of the action features (see :func:`action_features_size`); 0 for a state-only
            reward r(s).
        hidden_sizes: MLP hidden layers ([] = linear).
        activation: relu or tanh.
        use_next_obs: also read the observation the step led to.
    """

    def __init__(self, obs_shape: tuple[int, ...], action_size: int, hidden_sizes: list[int], activation: str,
                 use_next_obs: bool = False):
        super().__init__()
        pixels = len(obs_shape) == 3
        self.trunk: nn.Module = NatureTrunk(obs_shape[0], obs_shape[-1]) if pixels else nn.Identity()
        features = NATURE_FEATURES if pixels else int(obs_shape[0])
        self.head = MLP(features * (2 if use_next_obs else 1) + action_size, 1, hidden_sizes, activation)

    def forward(self, obs: torch.Tensor, action_features: torch.Tensor,
                next_obs: torch.Tensor | None = None) -> torch.Tensor:
        """(B, *obs_shape) observations, (B, action_size) float32 features and, for r(s, a, s'), the (B,
        *obs_shape) next observations -> (B,) rewards."""
        parts = [self.trunk(obs), action_features] + ([] if next_obs is None else [self.trunk(next_obs)])
        return self.head(torch.cat(parts, dim=1)).squeeze(-1)


class RewardEnsemble(nn.Module):
    """K reward networks with their input and output normalization, the object a reward checkpoint holds.

    ``reward(obs, actions[, next_obs])`` is the ensemble mean of the members' rewards, shifted and scaled by the
    buffers ``reward_mean`` and ``reward_std`` (set by :meth:`fit_normalization`). Vector observations
    are standardized with the buffers ``obs_mean`` and ``obs_std`` first.

    Args:
        obs_shape: one observation's shape, (D,) float or (C, H, W) uint8.
        action_space: Discrete(n) or a 1-D Box.
        hidden_sizes, activation: each member's MLP.
        ensemble_size: K >= 1.
        use_actions: False for a state-only reward r(s): the members never see the action (the imitation
            library's ``use_action=False``). A reward that must be learned from returns of whole segments
            can otherwise credit the action for what the state shows, e.g. reward large HalfCheetah
            actions because faster segments use them.
        use_next_obs: True for r(s, a, s'): the members also see the observation each step led to (the
            imitation library's ``use_next_state``). Where the true reward is a change of state, such as
            MuJoCo's forward progress over the step, the next observation carries what the reward measures;
            every method then needs ``next_obs``.
        init_seed: seed of the members' initial weights. They are drawn from a generator of their own, so
            that building a reward model leaves torch's global generator, and with it the agent built next
            (its initial weights and its sampled actions), as it was: ``algo=pbrl seed=S`` starts from the
            same agent as ``algo=ppo seed=S``, and the two are paired.
    """

    def __init__(self, obs_shape: tuple[int, ...], action_space: gym.Space, hidden_sizes: list[int],
                 activation: str, ensemble_size: int, use_actions: bool = True, use_next_obs: bool = False,
                 init_seed: int = 0):
        super().__init__()
        self.obs_shape, self.action_space = tuple(int(d) for d in obs_shape), action_space
        self.pixels = len(self.obs_shape) == 3
        self.discrete = isinstance(action_space, spaces.Discrete)
        self.action_size = action_features_size(action_space)
        self.hidden_sizes, self.activation, self.use_actions = list(hidden_sizes), activation, bool(use_actions)
        self.use_next_obs = bool(use_next_obs)
        with torch.random.fork_rng(devices=[]):  # the members are built on the CPU
            torch.manual_seed(init_seed)
            self.members = nn.ModuleList(RewardNet(self.obs_shape, self.action_size if self.use_actions else 0,
                                                   self.hidden_sizes, activation, self.use_next_obs)
                                         for _ in range(ensemble_size))
        flat = (1,) if self.pixels else self.obs_shape
        self.register_buffer("obs_mean", torch.zeros(flat))
        self.register_buffer("obs_std", torch.ones(flat))
        self.register_buffer("reward_mean", torch.zeros(()))
        self.register_buffer("reward_std", torch.ones(()))

    def inputs(self, obs: np.ndarray | torch.Tensor, actions: np.ndarray | torch.Tensor,
               next_obs: np.ndarray | torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """Network inputs of (B, *obs_shape) observations, (B,) int or (B, A) float actions and, for r(s, a,
        s'), the (B, *obs_shape) next observations; the action features are (B, 0) for a state-only reward.

        Raises:
            ValueError: if the model reads the next observation and ``next_obs`` is None.
        """
        if self.use_next_obs and next_obs is None:
            raise ValueError("this reward model is r(s, a, s'): pass the next observations (next_obs)")
        obs = self.normalize_obs(obs)
        actions = torch.as_tensor(actions, device=self.obs_mean.device)
        if self.discrete:
            features = nn.functional.one_hot(actions.long().reshape(-1), self.action_size).float()
        else:
            features = actions.float().reshape(-1, self.action_size)
        features = features if self.use_actions else features[:, :0]
        return (obs, features, self.normalize_obs(next_obs)) if self.use_next_obs else (obs, features)

    def normalize_obs(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B, *obs_shape) observations on the model's device, standardized if they are vectors."""
        obs = torch.as_tensor(obs, device=self.obs_mean.device)
        return obs if self.pixels else (obs.float() - self.obs_mean) / self.obs_std

    def member_rewards(self, obs, actions, next_obs=None) -> torch.Tensor:
        """(K, B) unnormalized rewards of every member."""
        inputs = self.inputs(obs, actions, next_obs)
        return torch.stack([member(*inputs) for member in self.members])

    def reward(self, obs, actions, next_obs=None) -> torch.Tensor:
        """(B,) float32 normalized ensemble-mean rewards, without gradient."""
        with torch.no_grad():
            return (self.member_rewards(obs, actions, next_obs).mean(0) - self.reward_mean) / self.reward_std

    def segment_returns(self, obs: torch.Tensor, actions: torch.Tensor,
                        next_obs: torch.Tensor | None = None) -> torch.Tensor:
        """(K, M) unnormalized returns of M segments: (M, L, *obs_shape) observations, (M, L, ...) actions
        and, for r(s, a, s'), (M, L, *obs_shape) next observations."""
        m, length = obs.shape[:2]
        flat = [x.reshape(m * length, *x.shape[2:]) if x is not None else None for x in (obs, actions, next_obs)]
        return self.member_rewards(*flat).reshape(-1, m, length).sum(-1)

    def fit_normalization(self, obs: np.ndarray, actions: np.ndarray, next_obs: np.ndarray | None = None,
                          batch: int = 4096, shift: str = "mean") -> None:
        """Set the output statistics from the ensemble-mean rewards of (B, *obs_shape) observations, their
        actions (and next observations, for r(s, a, s')), so that they have standard deviation 1 and, with ``shift="mean"``, mean 0 (Christiano
        et al. 2017, 2.2); with ``shift="min"`` their lowest value becomes 0 instead.

        The Bradley-Terry loss leaves a constant per-step offset free, so where episodes end on failure
        (Hopper's falls) the offset decides what living longer is worth: zero on average with ``mean``, so
        ending early costs nothing; never negative with ``min``, like the true reward's alive bonus.

        Raises:
            ValueError: for another ``shift``.
        """
        if shift not in SHIFTS:
            raise ValueError(f"shift={shift!r}: expected one of {', '.join(SHIFTS)}")
        with torch.no_grad():
            rewards = torch.cat([self.member_rewards(obs[i:i + batch], actions[i:i + batch],
                                                     None if next_obs is None else next_obs[i:i + batch]).mean(0)
                                 for i in range(0, len(obs), batch)])
        self.reward_mean.fill_(rewards.mean() if shift == "mean" else rewards.min())
        self.reward_std.fill_(rewards.std() + STD_EPSILON if len(rewards) > 1 else 1.0)

    def fit_obs_normalization(self, obs: np.ndarray) -> None:
        """Standardize vector inputs with the mean and standard deviation of (B, D) observations."""
        if not self.pixels:
            obs = torch.as_tensor(obs, dtype=torch.float32, device=self.obs_mean.device)
            self.obs_mean.copy_(obs.mean(0))
            self.obs_std.copy_(obs.std(0) + STD_EPSILON if len(obs) > 1 else torch.ones_like(self.obs_std))

    def spec(self) -> dict:
        """Plain-value description of the architecture (stored in checkpoints)."""
        action = {"n": self.action_size} if self.discrete else {"shape": [self.action_size]}
        return {"obs_shape": list(self.obs_shape), "action": action, "hidden_sizes": self.hidden_sizes,
                "activation": self.activation, "ensemble_size": len(self.members), "use_actions": self.use_actions,
                "use_next_obs": self.use_next_obs}


def ensemble_from_spec(spec: dict) -> RewardEnsemble:
    """Rebuild an (untrained) ensemble from :meth:`RewardEnsemble.spec`'s output."""
    action = spec["action"]
    space = (spaces.Discrete(int(action["n"])) if "n" in action
             else spaces.Box(-np.inf, np.inf, (int(action["shape"][0]),), np.float32))
    return RewardEnsemble(tuple(spec["obs_shape"]), space, list(spec["hidden_sizes"]), spec["activation"],
                          int(spec["ensemble_size"]), bool(spec.get("use_actions", True)),
                          bool(spec.get("use_next_obs", False)))


def save_reward_model(ensemble: RewardEnsemble, path: str | Path, env_id: str, extra: dict | None = None) -> Path:
    """Write a reward-model checkpoint (weights and normalization statistics) atomically.

    Layout: {"format", "kind": "reward_model", "env_id", "spec", "state_dict", **extra}; it loads with
    ``torch.load(weights_only=True)``.
    """
    path = Path(path)
    payload = {"format": REWARD_MODEL_FORMAT, "kind": "reward_model", "env_id": env_id, "spec": ensemble.spec(),
               "state_dict": {k: v.detach().cpu() for k, v in ensemble.state_dict().items()}, **(extra or {})}
    tmp = path.with_name(f".tmp_{path.name}")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_reward_model(path: str | Path, key: str = "reward.path") -> tuple[RewardEnsemble, dict]:
    """Load a reward-model checkpoint written by :func:`save_reward_model`.

    Returns:
        (the ensemble in eval mode on the CPU, the payload).

    Raises:
        ConfigError: naming ``key`` if the file is missing, unreadable or not a reward model.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{key}={str(path)!r} is not a file: expected a reward_model.pt written by "
                          "rlrun algo=reward_model or algo=pbrl")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign files raise many kinds of errors
        raise ConfigError(f"{key}={str(path)!r} cannot be read as a reward model: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:200] if str(exc) else ''}") from None
    if not isinstance(payload, dict) or payload.get("kind") != "reward_model":
        raise ConfigError(f"{key}={str(path)!r} is not a reward-model checkpoint (a training checkpoint?): "
                          "expected the reward_model.pt in a reward_model or pbrl run directory")
    if payload.get("format") != REWARD_MODEL_FORMAT:
        raise ConfigError(f"{key}={str(path)!r} has reward-model format {payload.get('format')!r}: "
                          f"this rlrun reads format {REWARD_MODEL_FORMAT}")
    try:
        ensemble = ensemble_from_spec(payload["spec"])
        ensemble.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"{key}={str(path)!r} is a damaged reward model: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:200]}") from None
    return ensemble.eval(), payload


def check_spaces(ensemble: RewardEnsemble, obs_space: gym.Space, action_space: gym.Space, env_id: str,
                 key: str = "reward.path") -> None:
    """Refuse a reward model whose observation or action shape differs from the env's.

    Raises:
        ConfigError: naming ``key``, the env and both shapes.
    """
    spec = ensemble.spec()
    obs_shape = tuple(getattr(obs_space, "shape", None) or ())
    if tuple(spec["obs_shape"]) != obs_shape:
        raise ConfigError(f"{key}: the reward model takes observations of shape {tuple(spec['obs_shape'])} but "
                          f"{env_id} has {obs_space}: expected a reward model trained on an env with matching spaces")
    try:
        size = action_features_size(action_space)
    except ValueError as exc:
        raise ConfigError(f"{key}: {env_id}: {exc}") from None
    kind = "discrete" if isinstance(action_space, spaces.Discrete) else "continuous"
    if ("n" in spec["action"]) != (kind == "discrete") or size != ensemble.action_size:
        raise ConfigError(f"{key}: the reward model takes actions {spec['action']} but {env_id} has {action_space}: "
                          "expected a reward model trained on an env with matching spaces")
