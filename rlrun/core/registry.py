"""The algorithm registry: ``algo.name`` -> the algorithm's spec.

Every module in ``rlrun/algos/`` ends with one :func:`register` call, and ``rlrun/algos/__init__.py``
imports each module by name: that list is the whole registry (no folder is scanned). Code in any layer
reaches an algorithm only through its spec, at run time: the CLI trains and evaluates with it, and DAgger
plays an expert checkpoint of any algorithm with :func:`make_policy`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from omegaconf import DictConfig

from rlrun.core.config import ConfigError

if TYPE_CHECKING:  # type names only; core imports no other rlrun layer
    from rlrun.core.run import Run

Policy = Callable[[np.ndarray], np.ndarray]  # act(obs): (N, *obs_shape) observations -> (N, *action_shape) actions

# make_policy(cfg, state, envs, device, epsilon, seed) -> act: the evaluation policy of a checkpoint-like state dict
# on a VecEnv (its single spaces; algorithms without exploration ignore epsilon)
PolicyFactory = Callable[[DictConfig, dict, Any, torch.device, float, int], Policy]

DEFAULT_EVAL_POLICY = "the policy's mode"  # how rlrun-eval describes a policy without epsilon


@dataclass(frozen=True)
class AlgoSpec:
    """What the rest of rlrun needs to know of an algorithm.

    Attributes:
        name: the ``algo.name`` that selects it (configs/algo/<name>.yaml).
        validate: ``validate(cfg)`` raises ConfigError on a bad value of its keys, before anything is built.
        train: ``train(cfg, run) -> float`` trains, logging through the Run, and returns the final metric
            (what a sweep optimizes).
        make_policy: the evaluation policy of its checkpoints (``rlrun-eval``, ``eval.interval``, DAgger's
            expert), see :data:`PolicyFactory`; None if it has none (``eval.interval`` is then refused).
        eval_policy: how ``rlrun-eval`` describes that policy, when it has no epsilon.
        eval_uses_epsilon: its evaluation policy is epsilon-greedy (``--epsilon``, ``eval.epsilon``).
        metric: what ``train`` returns, in words; None means the mean raw return of the last
            ``logging.metric_episodes`` episodes.
        learned_reward: it can train on ``reward=learned`` (its envs take the learned-reward wrapper).
        task: what ``env`` must be: ``env`` (an RL environment), ``text`` (a text task, ``env.family=text``, for
            the language-model algorithms, which check it themselves) or ``both`` (either; the algorithm's
            validate checks a text task) or ``board`` (a two-player board game, ``env.family=board``, checked by
            the algorithm's validate).
        board_eval: for board games, ``board_eval(cfg, state, device, mcts_simulations, games, seed, video_dir)``
            -> win/draw/loss rates of a checkpoint's player against the evaluation opponents (``rlrun-eval``).
    """

    name: str
    validate: Callable[[DictConfig], None]
    train: Callable[[DictConfig, "Run"], float]
    make_policy: PolicyFactory | None = None
    eval_policy: str = DEFAULT_EVAL_POLICY
    eval_uses_epsilon: bool = False
    metric: str | None = None
    learned_reward: bool = False
    task: str = "env"
    board_eval: Callable[..., dict[str, float]] | None = None


_SPECS: dict[str, AlgoSpec] = {}


def register(spec: AlgoSpec) -> AlgoSpec:
    """Add ``spec`` to the registry and return it.

    Raises:
        ValueError: if another module already registered an algorithm of that name.
    """
    known = _SPECS.get(spec.name)
    if known is not None and known.train.__module__ != spec.train.__module__:
        raise ValueError(f"algorithm {spec.name!r} is registered twice ({known.train.__module__} and "
                         f"{spec.train.__module__})")
    _SPECS[spec.name] = spec
    return spec


def names() -> list[str]:
    """Names of the registered algorithms, sorted."""
    return sorted(_SPECS)


def specs() -> list[AlgoSpec]:
    """The registered specs, sorted by name."""
    return [_SPECS[name] for name in names()]


def get(name: str) -> AlgoSpec:
    """The spec of ``algo.name=name``.

    Raises:
        ConfigError: if no algorithm of that name is registered, listing the registered ones.
    """
    if name not in _SPECS:
        raise ConfigError(f"algo.name={name!r} is not allowed: expected one of {', '.join(names())}")
    return _SPECS[name]


def make_policy(cfg: DictConfig, state: dict[str, Any], envs: Any, device: torch.device, epsilon: float,
                seed: int) -> Policy:
    """The evaluation policy of a checkpoint of any algorithm (the one ``cfg.algo.name`` names).

    Args:
        cfg: the run's config.
        state: the loaded checkpoint payload (or the state a Run tracks).
        envs: the VecEnv to be played (its single observation and action spaces).
        device: where the network runs.
        epsilon: probability of a uniformly random action, in [0, 1] (ignored without exploration).
        seed: seed of the policy's random choices.

    Returns:
        ``act(obs)``: (N, *obs_shape) observations to (N, *action_shape) actions.

    Raises:
        ValueError: an unknown algorithm (ConfigError), one without an evaluation policy, or a policy that
            does not fit the env.
    """
    spec = get(cfg.algo.name)
    if spec.make_policy is None:
        raise ValueError(f"algorithm {cfg.algo.name!r} has no evaluation policy, so its checkpoints cannot be played")
    return spec.make_policy(cfg, state, envs, device, epsilon, seed)
