"""Vectorized environments: one interface over ALE games and gymnasium ids.

Every algorithm steps a :class:`VecEnv`. It autoresets in the same step (the
observation returned after an episode ends is the first of the next episode,
the last one is in ``final_obs``), separates the learning signals
(``terminated``: do not bootstrap; ``truncated``: time limit, bootstrap) from
reporting (``episode_end`` and the raw episodic returns), and never clips rewards:
clipping for learning is the algorithm's business (``preprocessing.clip_rewards``).

Atari runs on ``ale_py.vector_env.AtariVectorEnv``, which steps the envs in C++
threads with the whole Nature DQN preprocessing (no-op starts, frame skip with
max-pooling, 84x84 grayscale, frame stack, FIRE on reset, life loss as
termination) built in.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable

import gymnasium as gym
import numpy as np
import torch
from omegaconf import DictConfig


@dataclass
class StepResult:
    """What one step of all sub-envs returns. N = number of envs.

    Attributes:
        obs: (N, *obs_shape) next observations; where ``episode_end`` is set this is
            already the first observation of the next episode.
        reward: (N,) float32 raw (unclipped) rewards.
        terminated: (N,) bool, the transition ends in a terminal state for learning
            (game over, or a lost life with ``terminal_on_life_loss``): do not bootstrap.
        truncated: (N,) bool, the episode was cut by a time limit: bootstrap from ``final_obs``.
        episode_end: (N,) bool, the env was reset in this step (game over or time limit).
        final_obs: (N, *obs_shape) last observation of the episode that ended, valid
            only where ``episode_end``; elsewhere it equals ``obs``.
        episodes: (return, length) of each episode that ended in this step: the raw
            game score over all lives and the length in agent steps.
        learned_returns: with a learned reward (``reward=learned``), the learned return of each
            episode in ``episodes``; empty otherwise.
    """

    obs: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    episode_end: np.ndarray
    final_obs: np.ndarray
    episodes: list[tuple[float, int]] = field(default_factory=list)
    learned_returns: list[float] = field(default_factory=list)


def step_result(obs: np.ndarray, reward: np.ndarray, terminated: np.ndarray, truncated: np.ndarray,
                episode_end: np.ndarray, final_obs: np.ndarray | None) -> StepResult:
    """A StepResult from a same-step-autoreset vector env's outputs; ``final_obs`` (N, ...) holds the
    last observation of each env whose episode ended (an array, or an object array with None elsewhere)."""
    last = obs
    if episode_end.any():
        last = obs.copy()
        last[episode_end] = np.stack(list(final_obs[episode_end]))
    return StepResult(obs, reward.astype(np.float32), terminated.astype(bool), truncated.astype(bool),
                      episode_end, last)


class VecEnv:
    """N environments stepped together, with raw episode statistics.

    Subclasses implement ``_reset(seed)`` and ``_step(actions)``; the base class
    keeps the running raw return and length of every sub-env and the observations
    the envs are in (:attr:`obs`).

    In a checkpoint (``Run.track(envs=...)``) a VecEnv is two top-level entries: ``envs``, the
    simulator state (:meth:`get_state`, None where it cannot be captured) and ``obs``, the current
    observations. A resumed run continues the episodes exactly where the simulator state was saved;
    otherwise (ALE, MuJoCo) it says so and the episodes restart from the reset (:attr:`episodes_restored`).

    Attributes:
        num_envs: number of sub-envs N.
        single_observation_space, single_action_space: gymnasium spaces of one env.
        frame_stack: frames per observation (1 for vector observations).
        env_id: the ALE game or gymnasium id (for messages).
        obs: (N, *obs_shape) the observations the envs are in (after the last reset or step).
        episodes_restored: False after a resume that could not restore the simulator state.
    """

    num_envs: int
    single_observation_space: gym.Space
    single_action_space: gym.Space
    frame_stack: int = 1
    env_id: str = ""
    flat_state = True  # checkpoint entries "envs" and "obs" (rlrun.core.state)
    episodes_restored = True

    def reset(self, seed: int) -> np.ndarray:
        """Reset all envs; sub-env i is seeded with ``seed + i``. Returns (N, *obs_shape)."""
        self._returns = np.zeros(self.num_envs, dtype=np.float64)
        self._lengths = np.zeros(self.num_envs, dtype=np.int64)
        self.obs = self._reset(seed)
        return self.obs

    def step(self, actions: np.ndarray) -> StepResult:
        """Step every env with ``actions`` (N,) int64 (or (N, A) float32) and collect finished episodes."""
        result = self._step(actions)
        self._returns += result.reward
        self._lengths += 1
        for i in np.flatnonzero(result.episode_end):
            result.episodes.append((float(self._returns[i]), int(self._lengths[i])))
            self._returns[i] = 0.0
            self._lengths[i] = 0
        self.obs = result.obs
        return result

    @property
    def episode_lengths(self) -> np.ndarray:
        """(N,) int64 agent steps taken so far in each env's current episode (a copy)."""
        return self._lengths.copy()

    def close(self) -> None:
        """Release the envs."""

    def get_state(self) -> dict | None:
        """Everything needed to continue these episodes exactly, as plain values and tensors
        (checkpoint-safe); None if the simulator's state cannot be captured (ALE, MuJoCo)."""
        env_state = self._get_env_state()
        if env_state is None:
            return None
        return {"returns": torch.from_numpy(self._returns.copy()), "lengths": torch.from_numpy(self._lengths.copy()),
                "envs": env_state}

    def set_state(self, state: dict) -> None:
        """Restore :meth:`get_state`'s output into envs built from the same config (after ``reset``)."""
        self._returns = state["returns"].numpy().copy()
        self._lengths = state["lengths"].numpy().copy()
        self._set_env_state(state["envs"])

    def state_dict(self) -> dict:
        """The checkpoint entries ``envs`` (:meth:`get_state`) and ``obs`` (the current observations)."""
        return {"obs": torch.from_numpy(np.ascontiguousarray(self.obs)), "envs": self.get_state()}

    def load_state_dict(self, checkpoint: dict) -> None:
        """Continue a checkpoint's episodes (the envs were reset already): restore the simulator state and
        the observations. Where the state was not saved (ALE, MuJoCo) say so; the episodes restart."""
        if checkpoint["envs"] is None:
            print(f"rlrun: the {self.env_id} simulator state cannot be saved: episodes restart at step "
                  f"{checkpoint['global_step']}", flush=True)
            self.episodes_restored = False
            return
        self.set_state(checkpoint["envs"])
        self.obs = checkpoint["obs"].numpy().copy()
        self.episodes_restored = True

    def _get_env_state(self):
        return None

    def _set_env_state(self, state) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot restore env state")

    def _reset(self, seed: int) -> np.ndarray:
        raise NotImplementedError

    def _step(self, actions: np.ndarray) -> StepResult:
        raise NotImplementedError


class AtariVecEnv(VecEnv):
    """ALE games on ``ale_py.vector_env.AtariVectorEnv`` (preprocessing in C++).

    Observations are (frame_stack, screen_size, screen_size) uint8; at reset the
    stack is zero-padded ([0, 0, 0, f0]), and a lost life does not reset it.
    Rewards are raw. An episode (for reporting) ends at game over or at the frame
    limit; with ``terminal_on_life_loss`` each lost life is also ``terminated``.
    """

    def __init__(self, env_cfg: DictConfig, prep_cfg: DictConfig, num_envs: int):
        from ale_py.vector_env import AtariVectorEnv

        self.num_envs = num_envs
        self.frame_stack = int(prep_cfg.frame_stack)
        self._env = AtariVectorEnv(
            game=env_cfg.id,
            num_envs=num_envs,
            num_threads=int(env_cfg.num_threads),
            max_num_frames_per_episode=int(env_cfg.max_episode_frames),
            repeat_action_probability=float(env_cfg.repeat_action_probability),
            full_action_space=bool(env_cfg.full_action_space),
            autoreset_mode="SameStep",
            img_height=int(prep_cfg.screen_size),
            img_width=int(prep_cfg.screen_size),
            grayscale=True,
            stack_num=self.frame_stack,
            frameskip=int(prep_cfg.frame_skip),
            maxpool=bool(prep_cfg.max_pool),
            noop_max=int(prep_cfg.noop_max),
            episodic_life=False,
            life_loss_info=bool(prep_cfg.terminal_on_life_loss),
            reward_clipping=False,
            use_fire_reset=bool(prep_cfg.fire_reset),
        )
        self.single_observation_space = self._env.single_observation_space
        self.single_action_space = self._env.single_action_space
        self._episode_frame = np.zeros(num_envs, dtype=np.int64)

    def _reset(self, seed: int) -> np.ndarray:
        obs, info = self._env.reset(seed=seed)
        self._episode_frame = info["episode_frame_number"].astype(np.int64)
        return obs

    def _step(self, actions: np.ndarray) -> StepResult:
        obs, reward, terminated, truncated, info = self._env.step(np.asarray(actions, dtype=np.int64))
        frame = info["episode_frame_number"].astype(np.int64)
        # A reset (game over or time limit) restarts the episode frame counter; a lost life does not.
        episode_end = truncated | (frame < self._episode_frame)
        self._episode_frame = frame
        return step_result(obs, reward, terminated, truncated, episode_end, info.get("final_obs"))

    def close(self) -> None:
        self._env.close()


_SHOWN_WARNINGS: set[tuple[type, str]] = set()  # (category, text) of the env warnings shown in this process


def make_env_once_warned(env_id: str, **kwargs) -> gym.Env:
    """``gymnasium.make(env_id, **kwargs)``, showing each warning it raises (e.g. "The environment Hopper-v4 is
    out of date") once per process rather than once per env built: gymnasium's own "once" filter is reset
    whenever any library touches the warning filters, so 8 envs and an evaluation env printed it again."""
    with warnings.catch_warnings(record=True) as caught:
        env = gym.make(env_id, **kwargs)
    for w in caught:
        if (w.category, str(w.message)) not in _SHOWN_WARNINGS:
            _SHOWN_WARNINGS.add((w.category, str(w.message)))
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return env


class GymVecEnv(VecEnv):
    """Gymnasium envs in a ``SyncVectorEnv`` with same-step autoreset.

    Args:
        make_env: builds one sub-env (called ``num_envs`` times).
        num_envs: number of sub-envs.
        frame_stack: frames per observation (1 for vector observations).
    """

    def __init__(self, make_env: Callable[[], gym.Env], num_envs: int, frame_stack: int = 1):
        self.num_envs = num_envs
        self.frame_stack = frame_stack
        self._env = gym.vector.SyncVectorEnv([make_env] * num_envs,
                                             autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        self.single_observation_space = self._env.single_observation_space
        self.single_action_space = self._env.single_action_space
        self.capturable = type(self._env.envs[0].unwrapped).__module__.startswith(CAPTURABLE_MODULES)

    @classmethod
    def from_config(cls, env_cfg: DictConfig, num_envs: int, render_mode: str | None = None,
                    wrapper: Callable[[gym.Env], gym.Env] | None = None) -> GymVecEnv:
        """``num_envs`` copies of ``gymnasium.make(env_cfg.id, **env_cfg.kwargs)`` with the config's time
        limit, optionally rendering (``render_mode``) and wrapped by ``wrapper``."""
        kwargs = dict(env_cfg.kwargs or {})
        if env_cfg.max_episode_steps is not None:
            kwargs["max_episode_steps"] = int(env_cfg.max_episode_steps)

        def make_env() -> gym.Env:
            env = make_env_once_warned(env_cfg.id, render_mode=render_mode, **kwargs)
            return wrapper(env) if wrapper is not None else env

        return cls(make_env, num_envs)

    def _reset(self, seed: int) -> np.ndarray:
        obs, _ = self._env.reset(seed=seed)
        return obs

    def _step(self, actions: np.ndarray) -> StepResult:
        obs, reward, terminated, truncated, info = self._env.step(actions)
        return step_result(obs, reward, terminated, truncated, terminated | truncated, info.get("final_obs"))

    def close(self) -> None:
        self._env.close()

    def _get_env_state(self):
        if not self.capturable:
            return None
        return [[_plain_attributes(layer) for layer in _wrapper_chain(sub)] for sub in self._env.envs]

    def _set_env_state(self, state) -> None:
        for sub, layers in zip(self._env.envs, state):
            _restore_attributes(_wrapper_chain(sub), layers)


class CartPoleNumpyVecEnv(VecEnv):
    """gymnasium's NumPy-vectorized CartPole (``CartPoleVectorEnv``): every env in one array operation
    per step, no per-env Python loop. That class resets finished envs one step late (NEXT_STEP
    autoreset, a dummy step with reward 0); here they are reset in the same step, drawing the new
    state exactly as ``CartPoleVectorEnv`` does, so the interface matches every other VecEnv."""

    def __init__(self, env_cfg: DictConfig, num_envs: int):
        kwargs = dict(env_cfg.kwargs or {})
        if env_cfg.max_episode_steps is not None:
            kwargs["max_episode_steps"] = int(env_cfg.max_episode_steps)
        self.num_envs = num_envs
        self._env = gym.make_vec(env_cfg.id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)
        self.single_observation_space = self._env.single_observation_space
        self.single_action_space = self._env.single_action_space

    def _reset(self, seed: int) -> np.ndarray:
        obs, _ = self._env.reset(seed=seed)
        return obs

    def _step(self, actions: np.ndarray) -> StepResult:
        obs, reward, terminated, truncated, _ = self._env.step(np.asarray(actions))
        done = terminated | truncated
        next_obs = obs
        if done.any():
            env = self._env.unwrapped
            env.state[:, done] = env.np_random.uniform(low=env.low, high=env.high, size=(4, int(done.sum())))
            env.steps[done] = 0
            env.prev_done[done] = False  # already reset: no dummy step next time
            next_obs = obs.copy()
            next_obs[done] = env.state[:, done].T.astype(np.float32)
        return StepResult(next_obs, reward.astype(np.float32), terminated, truncated, done, obs)

    def close(self) -> None:
        self._env.close()

    def _get_env_state(self):
        return [_plain_attributes(layer) for layer in _wrapper_chain(self._env)]

    def _set_env_state(self, state) -> None:
        _restore_attributes(_wrapper_chain(self._env), state)


CAPTURABLE_MODULES = ("gymnasium.envs.classic_control", "gymnasium.envs.toy_text",  # state is plain attributes
                      "rlrun.envs.lecture")  # state is plain attributes


def _wrapper_chain(env: gym.Env) -> list[gym.Env]:
    """[outermost wrapper, ..., unwrapped env]."""
    chain = [env]
    while hasattr(chain[-1], "env"):
        chain.append(chain[-1].env)
    return chain


def _plain_attributes(obj: object) -> dict:
    """The attributes of ``obj`` that hold simulation state: numbers, strings, None, numeric arrays
    (as tensors) and NumPy generators (as their bit-generator state)."""
    out = {}
    for name, value in vars(obj).items():
        if isinstance(value, np.random.Generator):
            out[name] = value.bit_generator.state
        elif isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
            out[name] = torch.from_numpy(value.copy())
        elif value is None or isinstance(value, (bool, int, float, str)):
            out[name] = value
    return out


def _restore_attributes(layers: list, states: list[dict]) -> None:
    """Set back what :func:`_plain_attributes` took from each of ``layers``."""
    for layer, attributes in zip(layers, states):
        for name, value in attributes.items():
            if isinstance(value, dict) and "bit_generator" in value:
                getattr(layer, name).bit_generator.state = value
            else:
                setattr(layer, name, value.numpy().copy() if isinstance(value, torch.Tensor) else value)
