"""``reward=learned reward.path=<reward_model.pt>``: any run that can (``AlgoSpec.learned_reward``) optimizes a
learned reward instead of the env's. The wrapper replaces each step's reward by the reward model's; the
episode statistics stay the env's true returns."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from rlrun.core.config import check_choice, fail, get
from rlrun.envs.factory import env_spaces
from rlrun.envs.vector import StepResult, VecEnv
from rlrun.rlhf.reward_models import RewardEnsemble, check_spaces, load_reward_model


class LearnedRewardVecEnv(VecEnv):
    """A VecEnv whose rewards come from a reward model: ``reward=learned reward.path=<reward_model.pt>``.

    ``step`` returns the normalized learned reward r(s_t, a_t) of the observation the action was taken in
    and the action sent to the env (and, for r(s, a, s'), the observation the step led to: the episode's
    last one where it ended); episode statistics (``episodes``, what charts/episodic_return logs)
    stay the env's true returns, and ``learned_returns`` holds each finished episode's learned return.
    In a checkpoint its ``envs`` entry adds the running learned returns to the wrapped envs' state.
    """

    def __init__(self, envs: VecEnv, ensemble: RewardEnsemble):
        self.envs, self.ensemble = envs, ensemble
        self.num_envs, self.env_id = envs.num_envs, envs.env_id
        self.single_observation_space, self.single_action_space = envs.single_observation_space, envs.single_action_space
        self.frame_stack = envs.frame_stack
        self._learned = np.zeros(self.num_envs, np.float64)

    def reset(self, seed: int) -> np.ndarray:
        self.obs = self.envs.reset(seed)
        self._learned[:] = 0.0
        return self.obs

    def step(self, actions: np.ndarray) -> StepResult:
        result = self.envs.step(actions)
        learned = self.ensemble.reward(self.obs, actions, result.final_obs).cpu().numpy().astype(np.float32)
        self._learned += learned
        result.learned_returns = [float(self._learned[i]) for i in np.flatnonzero(result.episode_end)]
        self._learned[result.episode_end] = 0.0
        result.reward = learned
        self.obs = result.obs
        return result

    @property
    def episode_lengths(self) -> np.ndarray:
        return self.envs.episode_lengths

    def close(self) -> None:
        self.envs.close()

    def get_state(self) -> dict | None:
        state = self.envs.get_state()
        return None if state is None else {**state, "learned": torch.from_numpy(self._learned.copy())}

    def set_state(self, state: dict) -> None:
        self.envs.set_state(state)
        self._learned = state["learned"].numpy().copy()


def with_learned_reward(cfg: DictConfig, envs: VecEnv) -> VecEnv:
    """``envs`` as they are, or with ``reward=learned`` wrapped so that their rewards come from the reward
    model at ``reward.path`` (validated before: :func:`validate_reward`)."""
    if OmegaConf.select(cfg, "reward.source", default="env") != "learned":
        return envs
    ensemble, _ = load_reward_model(cfg.reward.path)
    return LearnedRewardVecEnv(envs, ensemble)


def validate_reward(cfg: DictConfig, learned_reward_algos: Sequence[str]) -> None:
    """Check the ``reward`` keys: with ``reward=learned`` the algorithm must be one of ``learned_reward_algos``
    (those whose spec says they can train on it) and ``reward.path`` must be a reward model whose spaces
    match the env's.

    Raises:
        ConfigError: naming the key and what is allowed.
    """
    if OmegaConf.select(cfg, "reward", default=None) is None:
        return  # a config from before learned rewards existed: the env's reward
    if check_choice(cfg, "reward.source", ["env", "learned"]) == "env":
        return
    if cfg.algo.name not in learned_reward_algos:
        fail("reward", "learned", f"reward=env for algo={cfg.algo.name}: a learned reward drives "
             + " or ".join(f"algo={name}" for name in learned_reward_algos))
    path = get(cfg, "reward.path")
    if not isinstance(path, str) or not path:
        fail("reward.path", path, "the path of a reward_model.pt")
    ensemble, _ = load_reward_model(path)
    check_spaces(ensemble, *env_spaces(cfg), cfg.env.id)
