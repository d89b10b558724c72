"""Playing whole episodes with a policy: evaluation rollouts, videos and demonstrations."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
from omegaconf import DictConfig

from rlrun.core.registry import Policy
from rlrun.envs.factory import make_vec_env
from rlrun.envs.render import RecordEpisodeVideos, make_render_env
from rlrun.envs.vector import VecEnv


class StepRecorder(Protocol):
    """Receives every step :func:`play` takes (rlrun.data.demos.DemoRecorder)."""

    def add(self, obs: np.ndarray, actions: np.ndarray, reward: float, episode_end: bool) -> None: ...


def make_eval_env(cfg: DictConfig, video_dir: str | Path | None = None, episodes: int = 0) -> VecEnv:
    """One env of the run with its true rewards: ``make_vec_env(cfg, 1)``, or with ``video_dir`` a rendering
    env with the same observations that writes its first ``episodes`` episodes as MP4 files there."""
    if video_dir is None:
        return make_vec_env(cfg, 1)
    return make_render_env(cfg, wrapper=lambda env: RecordEpisodeVideos(env, video_dir, episodes))


def play(env: VecEnv, act: Policy, episodes: int, seed: int, recorder: StepRecorder | None = None) -> dict[str, Any]:
    """Play ``episodes`` whole episodes on ``env`` (num_envs=1) from ``env.reset(seed)``; with a ``recorder``
    every step's observation, action and true reward go into it.

    Returns:
        {"episodes": n, "returns": [float] raw returns, "lengths": [int] agent steps,
        "mean", "std" (population, ddof=0), "min", "max": of the returns}.

    Raises:
        ValueError: if ``episodes`` < 1.
    """
    if episodes < 1:
        raise ValueError(f"episodes={episodes}: expected at least 1")
    obs = env.reset(seed=seed)
    finished: list[tuple[float, int]] = []
    while len(finished) < episodes:
        actions = act(obs)
        step = env.step(actions)
        if recorder is not None:
            recorder.add(obs, actions, float(step.reward[0]), bool(step.episode_end[0]))
        finished += step.episodes
        obs = step.obs
    returns = [float(r) for r, _ in finished]
    return {"episodes": len(finished), "returns": returns, "lengths": [int(n) for _, n in finished],
            "mean": float(np.mean(returns)), "std": float(np.std(returns)),
            "min": min(returns), "max": max(returns)}


def evaluate(cfg: DictConfig, make_policy: Callable[[VecEnv], Policy], episodes: int, seed: int,
             video_dir: str | Path | None = None, recorder: StepRecorder | None = None) -> dict[str, Any]:
    """Play ``episodes`` whole episodes on one env built from ``cfg`` (see :func:`make_eval_env`).

    Args:
        cfg: the run's config (its env and preprocessing).
        make_policy: given the env, returns ``act``: (1, *obs_shape) observations to (1, ...) actions.
        episodes: number of episodes (>= 1).
        seed: seed of the env.
        video_dir: if given, one MP4 per episode is written there (``episode_<i>.mp4``).
        recorder: if given, records the episodes as demonstrations (see :func:`play`).

    Returns:
        The statistics of :func:`play`.

    Raises:
        ValueError: if ``episodes`` < 1, or from ``make_policy``.
    """
    with closing(make_eval_env(cfg, video_dir, episodes)) as env:
        return play(env, make_policy(env), episodes, seed, recorder)
