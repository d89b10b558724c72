"""Environment factory: one vectorized interface over ALE games and gymnasium ids.

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

from dataclasses import dataclass, field
from typing import Callable

import gymnasium as gym
from gymnasium import spaces
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from rlrun.config import ConfigError, check_bool, check_choice, check_int, check_number, fail, get
from rlrun.envs import lecture

lecture.register()  # the lectures' MDPs as gymnasium ids rlrun/...


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
    keeps the running raw return and length of every sub-env.

    Attributes:
        num_envs: number of sub-envs N.
        single_observation_space, single_action_space: gymnasium spaces of one env.
        frame_stack: frames per observation (1 for vector observations).
    """

    num_envs: int
    single_observation_space: gym.Space
    single_action_space: gym.Space
    frame_stack: int = 1

    def reset(self, seed: int) -> np.ndarray:
        """Reset all envs; sub-env i is seeded with ``seed + i``. Returns (N, *obs_shape)."""
        self._returns = np.zeros(self.num_envs, dtype=np.float64)
        self._lengths = np.zeros(self.num_envs, dtype=np.int64)
        return self._reset(seed)

    def step(self, actions: np.ndarray) -> StepResult:
        """Step every env with ``actions`` (N,) int64 (or (N, A) float32) and collect finished episodes."""
        result = self._step(actions)
        self._returns += result.reward
        self._lengths += 1
        for i in np.flatnonzero(result.episode_end):
            result.episodes.append((float(self._returns[i]), int(self._lengths[i])))
            self._returns[i] = 0.0
            self._lengths[i] = 0
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
            env = gym.make(env_cfg.id, render_mode=render_mode, **kwargs)
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


def action_kind(cfg: DictConfig) -> str:
    """'categorical' for a discrete action space, 'gaussian' for a box; builds no env for ALE games."""
    if cfg.env.family == "atari":
        return "categorical"
    env = gym.make(cfg.env.id, **dict(cfg.env.kwargs or {}))
    space = env.action_space
    env.close()
    if isinstance(space, spaces.Discrete):
        return "categorical"
    if isinstance(space, spaces.Box) and len(space.shape) == 1:
        return "gaussian"
    raise ConfigError(f"env.id={cfg.env.id!r} is not allowed for PPO: its action space {space} is neither "
                      "Discrete nor a 1-D Box")


def _restore_attributes(layers: list, states: list[dict]) -> None:
    """Set back what :func:`_plain_attributes` took from each of ``layers``."""
    for layer, attributes in zip(layers, states):
        for name, value in attributes.items():
            if isinstance(value, dict) and "bit_generator" in value:
                getattr(layer, name).bit_generator.state = value
            else:
                setattr(layer, name, value.numpy().copy() if isinstance(value, torch.Tensor) else value)


def validate_env(cfg: DictConfig) -> None:
    """Check env and preprocessing keys, including that the game or id exists.

    Raises:
        ConfigError: unknown ALE game or gymnasium id, a preprocessing that does not
            fit the env family, or a bad preprocessing value.
    """
    family = check_choice(cfg, "env.family", ["atari", "gym"])
    env_id = get(cfg, "env.id")
    prep = check_choice(cfg, "preprocessing.name", ["atari", "none"])
    check_bool(cfg, "preprocessing.clip_rewards")
    if family == "atari":
        import ale_py.roms

        games = ale_py.roms.get_all_rom_ids()
        if env_id not in games:
            fail("env.id", env_id, "an ALE game in snake_case, one of: " + ", ".join(sorted(games)))
        if prep != "atari":
            fail("preprocessing", prep, "atari for ALE games (AtariVectorEnv does the preprocessing)")
        check_number(cfg, "env.repeat_action_probability", low=0.0, high=1.0)
        check_int(cfg, "env.max_episode_frames", low=1)
        check_bool(cfg, "env.full_action_space")
        check_int(cfg, "env.num_threads", low=0)
        check_int(cfg, "preprocessing.noop_max", low=0)
        check_int(cfg, "preprocessing.frame_skip", low=1)
        check_bool(cfg, "preprocessing.max_pool")
        check_int(cfg, "preprocessing.screen_size", low=8)
        check_int(cfg, "preprocessing.frame_stack", low=1)
        check_bool(cfg, "preprocessing.terminal_on_life_loss")
        check_bool(cfg, "preprocessing.fire_reset")
    else:
        if not isinstance(env_id, str) or env_id not in gym.registry:
            import difflib

            close = difflib.get_close_matches(str(env_id), list(gym.registry), n=3)
            fail("env.id", env_id, "a registered gymnasium id" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        if prep != "none":
            fail("preprocessing", prep, "none for gymnasium ids (the atari stack needs env=atari)")
        check_int(cfg, "preprocessing.frame_stack", low=1, high=1)
        check_int(cfg, "env.max_episode_steps", low=1, optional=True)
        if env_id in lecture.ENV_IDS:
            _validate_lecture_env(cfg)
        if check_bool(cfg, "env.vectorized"):
            from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv

            entry = gym.spec(env_id).vector_entry_point
            if entry is None or gym.envs.registration.load_env_creator(entry) is not CartPoleVectorEnv:
                fail("env.vectorized", True, f"false for {env_id}: only CartPole's NumPy-vectorized env is supported")


def make_single_env(cfg: DictConfig) -> gym.Env:
    """One ``gymnasium.make(cfg.env.id, **cfg.env.kwargs)`` with the config's time limit (gym family)."""
    kwargs = dict(cfg.env.kwargs or {})
    if cfg.env.max_episode_steps is not None:
        kwargs["max_episode_steps"] = int(cfg.env.max_episode_steps)
    return gym.make(cfg.env.id, **kwargs)


def probe_env(cfg: DictConfig) -> tuple[gym.Space, gym.Space, gym.Env]:
    """Build one env of ``cfg.env`` (gym family), read it and close it: (observation space, action space,
    unwrapped env). The unwrapped env's attributes and exact model stay readable after closing."""
    env = make_single_env(cfg)
    probe = env.observation_space, env.action_space, env.unwrapped
    env.close()
    return probe


def _validate_lecture_env(cfg: DictConfig) -> None:
    """Build a lecture env from its kwargs (their errors become ConfigErrors) and refuse a chain whose
    episodes cannot end."""
    try:
        _, _, unwrapped = probe_env(cfg)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"env.kwargs={dict(cfg.env.kwargs)!r} is not allowed for {cfg.env.id}: {err}") from None
    if isinstance(unwrapped, lecture.RecyclingChain) and not unwrapped.terminal.any() \
            and cfg.env.max_episode_steps is None:
        fail("env.max_episode_steps", None, "a step limit (int >= 1) for a chain with no terminal state "
             "(env.kwargs.terminal_states is empty), or some terminal states: otherwise episodes never end")


def episodes_may_never_end(cfg: DictConfig) -> bool:
    """True when some policy can keep an episode of ``cfg.env`` going forever: a lecture chain with a
    non-terminal state that an action keeps among non-terminal states, and no step limit. (Other envs
    end with probability 1 or have a time limit.)"""
    if cfg.env.family != "gym" or cfg.env.max_episode_steps is not None or cfg.env.id not in lecture.ENV_IDS:
        return False
    _, _, unwrapped = probe_env(cfg)
    if not isinstance(unwrapped, lecture.RecyclingChain):
        return False
    model = unwrapped.model()
    staying = model.transitions[:, :, ~model.terminal].sum(axis=2) > 0  # (S, A): a may keep s going
    return bool(staying[~model.terminal].any())


def check_gamma(cfg: DictConfig, key: str = "algo.gamma") -> float:
    """Check a discount: in [0, 1], and below 1 where episodes may never end (returns could be unbounded).

    Raises:
        ConfigError: naming ``key``, its value and what is allowed.
    """
    gamma = check_number(cfg, key, low=0.0, high=1.0)
    if gamma == 1.0 and episodes_may_never_end(cfg):
        fail(key, gamma, f"a discount below 1 for {cfg.env.id} without a step limit (a policy can keep "
             "its episodes going forever, so returns at gamma 1 may be unbounded), or set env.max_episode_steps")
    return float(gamma)


def check_array_observations(cfg: DictConfig) -> None:
    """Refuse an env whose observations are state indices (``Discrete``) for an algorithm whose networks
    need vectors or pixels.

    Raises:
        ConfigError: naming the env and how to get vectors (the lecture envs' ``one_hot``).
    """
    if cfg.env.family != "gym":
        return
    space, _, _ = probe_env(cfg)
    if isinstance(space, spaces.Discrete):
        hint = "set env.kwargs.one_hot=true" if cfg.env.id in lecture.ENV_IDS else "use a tabular algorithm"
        fail("env", cfg.env.name, f"an env with vector or pixel observations for algo={cfg.algo.name}; "
             f"{cfg.env.id} observes state indices ({space}): {hint}")


def discrete_states(cfg: DictConfig) -> int:
    """The number of states of ``cfg.env``, whose observations must be state indices (``Discrete``).

    Raises:
        ConfigError: for an env with pixel, vector or continuous observations.
    """
    if cfg.env.family == "gym":
        space, _, _ = probe_env(cfg)
        if isinstance(space, spaces.Discrete):
            return int(space.n)
        what = f"observation space {space}"
    else:
        what = "pixel observations"
    fail("env", cfg.env.name, f"an env with discrete states (Discrete observations) for a tabular algorithm, "
         f"e.g. recycling, trap or FrozenLake-v1 (the lecture envs need env.kwargs.one_hot=false); "
         f"{cfg.env.id} has {what}")


def tabular_model(cfg: DictConfig) -> lecture.TabularModel:
    """The exact model of ``cfg.env``: a lecture MDP's own, or one built from a gymnasium toy-text env's
    ``P`` table (FrozenLake, Taxi, CliffWalking).

    Raises:
        ConfigError: the env has no discrete states or no exact model.
    """
    num_states = discrete_states(cfg)
    _, _, unwrapped = probe_env(cfg)
    if hasattr(unwrapped, "model"):
        return unwrapped.model()
    if not hasattr(unwrapped, "P"):
        fail("env", cfg.env.name, f"an env with an exact model for value iteration; {cfg.env.id} has none "
             "(use tabular Q-learning, algo=q_learning)")
    num_actions = int(unwrapped.action_space.n)
    transitions = np.zeros((num_states, num_actions, num_states))
    rewards = np.zeros((num_states, num_actions))
    terminal = np.zeros(num_states, dtype=bool)
    for s in range(num_states):
        for a in range(num_actions):
            for prob, target, reward, done in unwrapped.P[s][a]:
                rewards[s, a] += prob * reward
                if done:  # a terminating outcome leads to an absorbing copy: model it as a terminal target
                    terminal[target] = terminal[target] or target != s
                transitions[s, a, target] += prob
    transitions[terminal] = 0.0
    start = int(np.argmax(getattr(unwrapped, "initial_state_distrib", np.eye(num_states)[0])))
    return lecture.TabularModel(transitions, rewards, terminal, start)


def restore_episodes(envs: VecEnv, checkpoint: dict, env_id: str) -> np.ndarray | None:
    """Continue a checkpoint's episodes: restore ``envs`` (reset already) from ``checkpoint["envs"]`` and
    return the observations they were in, ``checkpoint["obs"]``. Where the simulator state was not
    saved (ALE, MuJoCo) say so and return None: the episodes restart from the reset."""
    if checkpoint["envs"] is None:
        print(f"rlrun: the {env_id} simulator state cannot be saved: episodes restart at step "
              f"{checkpoint['global_step']}", flush=True)
        return None
    envs.set_state(checkpoint["envs"])
    obs = checkpoint["obs"].numpy().copy()
    if hasattr(envs, "set_obs"):  # a learned reward needs the observation each action is taken in
        envs.set_obs(obs)
    return obs


def make_vec_env(cfg: DictConfig, num_envs: int, learned_reward: bool = True) -> VecEnv:
    """Build ``num_envs`` copies of ``cfg.env`` with ``cfg.preprocessing``.

    Args:
        cfg: the composed run config (uses ``env``, ``preprocessing`` and ``reward``).
        num_envs: number of sub-envs (>= 1).
        learned_reward: with ``reward=learned``, wrap the envs so that their rewards come from the
            reward model at ``reward.path`` (:class:`rlrun.learned_reward.LearnedRewardVecEnv`);
            evaluation passes False (it reports true returns only).

    Returns:
        A VecEnv; call ``reset(seed)`` before stepping.

    Raises:
        ConfigError: if the env family is unknown or the reward model does not load.
    """
    if cfg.env.family == "atari":
        envs: VecEnv = AtariVecEnv(cfg.env, cfg.preprocessing, num_envs)
    elif cfg.env.family == "gym":
        envs = CartPoleNumpyVecEnv(cfg.env, num_envs) if cfg.env.vectorized else GymVecEnv.from_config(cfg.env, num_envs)
    else:
        raise ConfigError(f"env.family={cfg.env.family!r} is not allowed: expected atari or gym")
    if learned_reward and OmegaConf.select(cfg, "reward.source", default="env") == "learned":
        from rlrun.learned_reward import LearnedRewardVecEnv, load_reward_model

        ensemble, _ = load_reward_model(cfg.reward.path)
        envs = LearnedRewardVecEnv(envs, ensemble)
    return envs


def env_spaces(cfg: DictConfig) -> tuple[gym.Space, gym.Space]:
    """(single observation space, single action space) of ``cfg.env`` after preprocessing, read from
    one env that is closed again."""
    if cfg.env.family == "gym":
        return probe_env(cfg)[:2]
    envs = make_vec_env(cfg, 1, learned_reward=False)
    spaces_ = envs.single_observation_space, envs.single_action_space
    envs.close()
    return spaces_
