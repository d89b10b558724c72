"""Environments that render RGB frames, for evaluation videos.

:func:`make_render_env` builds one env whose observations have the training
format and whose ``render()`` returns the game screen, so that
:class:`RecordEpisodeVideos` can write each episode to an MP4 file. ALE games get
the Nature DQN preprocessing from gymnasium's ``AtariPreprocessing`` (the training
envs get it from ``AtariVectorEnv``'s C++, which cannot render); observations are
the same (frame_stack, screen_size, screen_size) uint8 stacks, zero-padded at reset.
Episodes end at game over only (a lost life does not terminate), since an
evaluation episode is a whole game.

Videos are written with imageio's ffmpeg writer, frame by frame, rather than
with gymnasium's ``RecordVideo``: its moviepy backend (2.2) places frames at
float32 timestamps, so after a few seconds of video frames repeat and others are
skipped, and the last frame of an episode is sometimes dropped
(moviepy issues #2412 and #2507).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import gymnasium as gym
from omegaconf import DictConfig

from rlrun.core.config import ConfigError
from rlrun.envs.vector import GymVecEnv

ATARI_FRAME_RATE = 60  # frames per second of the Atari 2600 (NTSC): videos play in real time


class FireOnReset(gym.Wrapper):
    """Press FIRE for one emulator frame after every reset, before the no-ops, as
    ``AtariVectorEnv(use_fire_reset=True)`` does (Breakout waits for FIRE to launch the ball).

    Wraps an ALE env with frameskip=1, below ``AtariPreprocessing``.

    Raises:
        ValueError: if the game has no FIRE action.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._fire = env.unwrapped.get_action_meanings().index("FIRE")

    def reset(self, **kwargs):
        self.env.reset(**kwargs)
        obs, _, _, _, info = self.env.step(self._fire)
        return obs, info


class RecordEpisodeVideos(gym.Wrapper):
    """Write each of the first ``episodes`` episodes to ``<video_dir>/episode_<i>.mp4`` (i from 0).

    A video holds the frame rendered at reset and one frame per step, so an
    episode of length L gives L + 1 frames, at ``env.metadata["render_fps"]``
    frames per second (30 if unset). Frames go to ffmpeg as they come (H.264,
    yuv420p); an episode's file is complete at the next reset or at ``close()``.
    ``video_dir`` is created at the first recorded reset.

    Args:
        env: an env made with ``render_mode="rgb_array"``.
        video_dir: directory for the MP4 files.
        episodes: number of episodes to record (>= 0); later episodes are not recorded.

    Raises:
        ValueError: if ``env.render_mode`` is not ``rgb_array``.
    """

    def __init__(self, env: gym.Env, video_dir: str | Path, episodes: int):
        super().__init__(env)
        if env.render_mode != "rgb_array":
            raise ValueError(f"RecordEpisodeVideos needs render_mode='rgb_array', got {env.render_mode!r}")
        self.video_dir = Path(video_dir)
        self.episodes = episodes
        self.fps = float(env.metadata.get("render_fps") or 30)
        self._episode = -1
        self._writer = None

    def reset(self, **kwargs):
        self._finish()
        obs, info = self.env.reset(**kwargs)
        self._episode += 1
        if self._episode < self.episodes:
            import imageio

            self.video_dir.mkdir(parents=True, exist_ok=True)
            # macro_block_size=2: yuv420p needs even sizes; the default (16) would rescale 210x160 Atari frames
            self._writer = imageio.get_writer(self.video_dir / f"episode_{self._episode}.mp4", fps=self.fps,
                                              codec="libx264", macro_block_size=2)
            self._writer.append_data(self.env.render())
        return obs, info

    def step(self, action):
        result = self.env.step(action)
        if self._writer is not None:
            self._writer.append_data(self.env.render())
        return result

    def close(self) -> None:
        self._finish()
        super().close()

    def _finish(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def make_atari_render_env(cfg: DictConfig) -> gym.Env:
    """An ALE game that renders, with the training preprocessing of ``cfg.preprocessing`` but no life loss.

    Observations are (frame_stack, screen_size, screen_size) uint8, zero-padded at
    reset ([0, 0, 0, f0]); ``metadata["render_fps"]`` is 60 / frame_skip (real time).

    Raises:
        ConfigError: if ``preprocessing.max_pool`` is false with frame_skip > 1
            (``AtariPreprocessing`` always max-pools).
    """
    import ale_py

    env_cfg, prep = cfg.env, cfg.preprocessing
    frame_skip = int(prep.frame_skip)
    if frame_skip > 1 and not prep.max_pool:
        raise ConfigError("preprocessing.max_pool=false is not supported for videos: "
                          "gymnasium's AtariPreprocessing always max-pools the last two frames")
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # no version banner on stderr, as AtariVectorEnv
    env = ale_py.AtariEnv(game=env_cfg.id, frameskip=1, render_mode="rgb_array",
                          repeat_action_probability=float(env_cfg.repeat_action_probability),
                          full_action_space=bool(env_cfg.full_action_space),
                          max_num_frames_per_episode=int(env_cfg.max_episode_frames))
    if prep.fire_reset and "FIRE" in env.get_action_meanings():
        env = FireOnReset(env)
    env = gym.wrappers.AtariPreprocessing(env, noop_max=int(prep.noop_max), frame_skip=frame_skip,
                                          screen_size=int(prep.screen_size), terminal_on_life_loss=False,
                                          grayscale_obs=True)
    env = gym.wrappers.FrameStackObservation(env, stack_size=int(prep.frame_stack), padding_type="zero")
    env.metadata = {**env.metadata, "render_fps": ATARI_FRAME_RATE / frame_skip}
    return env


def make_render_env(cfg: DictConfig, wrapper: Callable[[gym.Env], gym.Env] | None = None) -> GymVecEnv:
    """One env of ``cfg.env`` whose ``render()`` returns (H, W, 3) uint8 RGB frames.

    Its observations have the format of ``make_vec_env(cfg, n)``'s: (1, *obs_shape)
    with the same shape and dtype, and the same action space. Unlike training, a
    lost life is not terminal.

    Args:
        cfg: the run's composed config (uses ``env`` and ``preprocessing``).
        wrapper: applied to the single gymnasium env before it is vectorized, e.g.
            ``lambda env: RecordEpisodeVideos(env, video_dir, episodes)``.

    Returns:
        A VecEnv with num_envs=1; call ``reset(seed)`` before stepping.

    Raises:
        ConfigError: if the env family is unknown, or see :func:`make_atari_render_env`.
    """
    if cfg.env.family == "gym":
        return GymVecEnv.from_config(cfg.env, 1, render_mode="rgb_array", wrapper=wrapper)
    if cfg.env.family != "atari":
        raise ConfigError(f"env.family={cfg.env.family!r} is not allowed: expected atari or gym")

    def make_env() -> gym.Env:
        env = make_atari_render_env(cfg)
        return wrapper(env) if wrapper is not None else env

    return GymVecEnv(make_env, 1, frame_stack=int(cfg.preprocessing.frame_stack))
