"""The env factory: validating env configs, building vector envs, and reading an env's spaces and properties.

    make_vec_env(cfg, num_envs)   -> a VecEnv of cfg.env with cfg.preprocessing (rlrun.envs.vector)
    env_spaces(cfg)               -> (observation space, action space) of one env
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import gymnasium as gym
from gymnasium import spaces
from omegaconf import DictConfig

from rlrun.core.config import ConfigError, check_bool, check_choice, check_int, check_number, fail, get
from rlrun.envs import lecture
from rlrun.envs.vector import AtariVecEnv, CartPoleNumpyVecEnv, GymVecEnv, VecEnv, make_env_once_warned


def validate_env(cfg: DictConfig) -> None:
    """Check env and preprocessing keys, including that the game or id exists.

    Raises:
        ConfigError: unknown ALE game or gymnasium id, a preprocessing that does not
            fit the env family, or a bad preprocessing value; a text task or a board game
            (algo=selfplay checks its own: rlrun.envs.board.validate_board_env).
    """
    if get(cfg, "env.family") == "text":
        fail("env", get(cfg, "env.name"), f"an environment for algo={get(cfg, 'algo.name')}: a text task (env.family=text) "
             "is for the language-model algorithms sft, dpo and ppo_rlhf")
    if get(cfg, "env.family") == "board":
        fail("env", get(cfg, "env.name"), f"an environment for algo={get(cfg, 'algo.name')}: a two-player board game "
             "(env.family=board) is for algo=selfplay")
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
        if isinstance(env_id, str) and env_id.startswith("ALE/"):
            rom = re.sub(r"(?<!^)(?=[A-Z])", "_", env_id[4:].split("-v")[0]).lower()
            fail("env.id", env_id, f"a gymnasium id of env=gym without pixels; for an ALE game use env=atari env.id={rom} "
                 "(the Atari preprocessing and the algorithms' Atari settings)")
        if not isinstance(env_id, str) or env_id not in gym.registry:
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


SMALL_OBSERVATION = 64  # at most this many observation values count as classic control's "small vector"


def env_kind(cfg: DictConfig) -> str | None:
    """The family of settings that suits ``cfg.env``, read from its id and spaces: ``atari`` for an ALE game
    (env.family=atari); ``continuous`` for Box actions; ``classic_control`` for Discrete actions with a
    Discrete observation or a 1-D Box of at most ``SMALL_OBSERVATION`` values; None for anything else
    (pixels through env=gym, dict spaces, text, board games, an id that does not build: validation names it)."""
    family, env_id = get(cfg, "env.family"), get(cfg, "env.id")
    if family == "atari":
        return "atari"
    if family != "gym" or not isinstance(env_id, str) or env_id not in gym.registry:
        return None
    try:
        obs_space, act_space, _ = probe_env(cfg)
    except Exception:  # validation reports an env that does not build; no preset then
        return None
    if isinstance(act_space, spaces.Box):
        return "continuous"
    small = isinstance(obs_space, spaces.Discrete) or (isinstance(obs_space, spaces.Box) and len(obs_space.shape) == 1
                                                       and obs_space.shape[0] <= SMALL_OBSERVATION)
    return "classic_control" if isinstance(act_space, spaces.Discrete) and small else None


def is_mujoco_env(cfg: DictConfig) -> bool:
    """Whether ``cfg.env`` is one of gymnasium's MuJoCo tasks (by its registered entry point)."""
    if get(cfg, "env.family") != "gym" or get(cfg, "env.id") not in gym.registry:
        return False
    entry = gym.spec(cfg.env.id).entry_point
    return isinstance(entry, str) and entry.startswith("gymnasium.envs.mujoco")


def send_mujoco_log(cfg: DictConfig, run_dir: Path) -> Path | None:
    """Point MuJoCo's log (its warnings, e.g. an unstable simulation) at ``<run_dir>/MUJOCO_LOG.TXT``
    instead of MuJoCo's default, a MUJOCO_LOG.TXT in the working directory; returns that path, or None for
    an env that is not MuJoCo (nothing is imported then). Process-wide: the next run repoints it."""
    if not is_mujoco_env(cfg):
        return None
    import mujoco

    path = Path(run_dir) / "MUJOCO_LOG.TXT"
    log = mujoco.MjLogConfig.get()
    log.logfile = str(path)
    log.set()
    return path


def make_single_env(cfg: DictConfig) -> gym.Env:
    """One ``gymnasium.make(cfg.env.id, **cfg.env.kwargs)`` with the config's time limit (gym family)."""
    kwargs = dict(cfg.env.kwargs or {})
    if cfg.env.max_episode_steps is not None:
        kwargs["max_episode_steps"] = int(cfg.env.max_episode_steps)
    return make_env_once_warned(cfg.env.id, **kwargs)


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


def action_kind(cfg: DictConfig) -> str:
    """'categorical' for a discrete action space, 'gaussian' for a box; builds no env for ALE games."""
    if cfg.env.family == "atari":
        return "categorical"
    env = make_env_once_warned(cfg.env.id, **dict(cfg.env.kwargs or {}))
    space = env.action_space
    env.close()
    if isinstance(space, spaces.Discrete):
        return "categorical"
    if isinstance(space, spaces.Box) and len(space.shape) == 1:
        return "gaussian"
    raise ConfigError(f"env.id={cfg.env.id!r} is not allowed for PPO: its action space {space} is neither "
                      "Discrete nor a 1-D Box")


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


def make_vec_env(cfg: DictConfig, num_envs: int) -> VecEnv:
    """Build ``num_envs`` copies of ``cfg.env`` with ``cfg.preprocessing``, with the env's own (true) rewards
    (``reward=learned`` wraps them: rlrun.rlhf.learned_reward).

    Args:
        cfg: the composed run config (uses ``env`` and ``preprocessing``).
        num_envs: number of sub-envs (>= 1).

    Returns:
        A VecEnv; call ``reset(seed)`` before stepping.

    Raises:
        ConfigError: if the env family is unknown.
    """
    if cfg.env.family == "atari":
        envs: VecEnv = AtariVecEnv(cfg.env, cfg.preprocessing, num_envs)
    elif cfg.env.family == "gym":
        envs = CartPoleNumpyVecEnv(cfg.env, num_envs) if cfg.env.vectorized else GymVecEnv.from_config(cfg.env, num_envs)
    else:
        raise ConfigError(f"env.family={cfg.env.family!r} is not allowed: expected atari or gym")
    envs.env_id = str(cfg.env.id)
    return envs


def env_spaces(cfg: DictConfig) -> tuple[gym.Space, gym.Space]:
    """(single observation space, single action space) of ``cfg.env`` after preprocessing, read from
    one env that is closed again."""
    if cfg.env.family == "gym":
        return probe_env(cfg)[:2]
    envs = make_vec_env(cfg, 1)
    spaces_ = envs.single_observation_space, envs.single_action_space
    envs.close()
    return spaces_
