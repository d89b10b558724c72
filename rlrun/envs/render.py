"""Environments that render RGB frames, for evaluation videos.

:func:`make_render_env` builds one env whose observations have the training
format and whose ``render()`` returns the game screen, so that
:class:`RecordEpisodeVideos` can write each episode to an MP4 file. ALE games get
the Nature DQN preprocessing from gymnasium's ``AtariPreprocessing`` (the training
envs get it from ``AtariVectorEnv``'s C++, which cannot render); observations are
the same (frame_stack, screen_size, screen_size) uint8 stacks, zero-padded at reset.
Episodes end at game over only (a lost life does not terminate), since an
evaluation episode is a whole game.

:class:`SegmentRenderer` turns the stored observations of a trajectory segment back into RGB frames
(Atari frame stacks, classic control and MuJoCo envs), for showing clips to people who compare them.

Videos are written with imageio's ffmpeg writer, frame by frame, rather than
with gymnasium's ``RecordVideo``: its moviepy backend (2.2) places frames at
float32 timestamps, so after a few seconds of video frames repeat and others are
skipped, and the last frame of an episode is sometimes dropped
(moviepy issues #2412 and #2507).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import load_env_creator
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


# ---------------------------------------------------------------------------------------------------------
# Frames of stored segments (for people labelling pairs of clips)

ATARI_SEGMENT_FPS = ATARI_FRAME_RATE / 4  # an Atari agent acts every 4th frame (preprocessing.frame_skip=4)
RENDERABLE = ("Atari frame stacks (an ALE game, e.g. breakout or ALE/Breakout-v5, with uint8 (C, H, W) or (H, W) "
              "observations), classic control (CartPole, MountainCar, MountainCarContinuous, Pendulum, Acrobot) "
              "and gymnasium MuJoCo envs that observe qpos without the leading x/y then qvel (HalfCheetah, Hopper, "
              "Walker2d, Swimmer, Ant, Humanoid, InvertedPendulum)")


class SegmentRenderer:
    """Frames of a segment re-created from its observations.

    A segment is stored as observations only (:class:`rlrun.rlhf.preference_data.Segments` holds them as
    (M, L, *obs_shape)); this turns one clip's (L, *obs_shape) observations back into RGB frames, e.g. for a
    page that shows people two clips side by side to compare (Christiano et al. 2017). Three families:

    - Atari (an ALE game name such as ``breakout``, as rlrun's configs store it, or a gymnasium id such as
      ``ALE/Breakout-v5``): uint8 observations of shape (C, H, W) (a stack of C frames, the newest last) or
      (H, W). A frame is the newest screen in gray, scaled up with nearest neighbour by the integer factor
      that brings the longer side nearest to ``size`` (84x84 screens become 168x168 at size 160). No env is
      built.
    - Classic control (CartPole, MountainCar, MountainCarContinuous, Pendulum, Acrobot): the env's state is
      set from the observation and ``render()`` draws it; the frame is resized (Lanczos) so that its longer
      side is ``size``, keeping the aspect ratio (CartPole's 600x400 becomes 160x107). Pendulum frames show
      no torque arrow, since the action is not in the observation.
    - Gymnasium MuJoCo envs whose observation is qpos without its first ``e`` coordinates (the x, or x and
      y, position of the body that the env leaves out), then qvel, then possibly more features (ignored,
      such as Ant's contact forces). ``e`` is found by comparing a reset observation with the simulator's
      qpos and qvel. The left-out coordinates are integrated from qvel[:e] with the trapezoidal rule, from
      0 at the segment's first step, so the floor moves under a running body; they drift from the true
      ones by a few centimetres over a few hundred steps (Hopper and Walker2d observe velocities clipped to
      [-10, 10], so beyond that speed the floor moves too slowly). The env is made with
      ``width=height=size``. Where the env's camera does not follow the body (HalfCheetah, Swimmer and Ant
      in gymnasium 1.4 render with a free camera fixed where the first frame is drawn), it is placed at
      the model's initial pose, where every segment starts, and a body that runs far leaves the picture,
      as in the env's own videos. A frame draws the observed pose; the env's own ``render()`` right after
      ``step()`` draws the pose one physics substep earlier (MuJoCo computes positions before it
      integrates), so the two differ slightly. Rendering is headless: ``MUJOCO_GL`` (process-wide) is set
      to ``egl``, or ``osmesa`` where only libOSMesa is found, unless it is already set.

    Args:
        env_id: the ALE game or gymnasium id the segment comes from (``Segments.env_id``).
        obs_shape: the shape of one observation, e.g. (4, 84, 84) or (17,).
        size: about how many pixels the longer side of a frame has (>= 8).

    Attributes:
        fps: playback frames per second: the env's ``metadata["render_fps"]`` (30 if unset); for Atari 15
            (one frame per agent step, 60 / 4).
        frame_shape: (H, W) of every frame.

    Raises:
        ConfigError: (one line naming ``env_id`` and what can be rendered) if the env is of none of these
            families, ``obs_shape`` is not that env's observation shape, or MuJoCo cannot render here.
        ValueError: if ``size`` < 8.
    """

    def __init__(self, env_id: str, obs_shape: tuple[int, ...], size: int = 160):
        if int(size) < 8:
            raise ValueError(f"size must be an int >= 8, got {size!r}")
        self.env_id, self.obs_shape, self.size = str(env_id), tuple(int(d) for d in obs_shape), int(size)
        self._env: gym.Env | None = None
        self._set_state: Callable[[np.ndarray], None] | None = None
        if _is_atari(self.env_id):
            self._init_atari()
        else:
            self._init_gym()

    # -- public --------------------------------------------------------------------------------------------

    def frames(self, obs: np.ndarray) -> np.ndarray:
        """Frames of one segment.

        Args:
            obs: (L, *obs_shape) observations of consecutive steps, L >= 0; uint8 for Atari, any real
                dtype for the other families.

        Returns:
            (L, H, W, 3) uint8 RGB frames, (H, W) = ``frame_shape``.

        Raises:
            ValueError: if ``obs`` does not have shape (L, *obs_shape), or Atari observations are not uint8.
            RuntimeError: after ``close()`` (for families that render through an env).
        """
        obs = np.asarray(obs)
        if obs.ndim != len(self.obs_shape) + 1 or obs.shape[1:] != self.obs_shape:
            dims = ", ".join(map(str, self.obs_shape))
            raise ValueError(f"{self.env_id} segment observations must have shape (L, {dims}), got {obs.shape}")
        if self._family == "atari":
            return self._atari_frames(obs)
        if self._env is None:
            raise RuntimeError(f"this SegmentRenderer of {self.env_id} is closed")
        if self._family == "mujoco":
            return self._mujoco_frames(obs)
        out = np.empty((len(obs), *self.frame_shape, 3), np.uint8)
        for t, o in enumerate(obs):
            self._set_state(np.asarray(o, np.float64))
            out[t] = self._fit(self._env.render())
        return out

    def close(self) -> None:
        """Close the env used for rendering, if any (idempotent)."""
        if self._env is not None:
            self._env.close()
            self._env = None

    def __enter__(self) -> SegmentRenderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- Atari ---------------------------------------------------------------------------------------------

    def _init_atari(self) -> None:
        shape = self.obs_shape
        if not (len(shape) == 2 or (len(shape) == 3 and shape[0] < min(shape[1:]))) or min(shape) < 1:
            raise self._unsupported(f"an Atari observation must be a uint8 (C, H, W) frame stack or an (H, W) "
                                    f"screen, got shape {shape}")
        self._family, self.fps = "atari", float(ATARI_SEGMENT_FPS)
        h, w = shape[-2:]
        self._scale = max(1, round(self.size / max(h, w)))
        self.frame_shape = (h * self._scale, w * self._scale)

    def _atari_frames(self, obs: np.ndarray) -> np.ndarray:
        if obs.dtype != np.uint8:
            raise ValueError(f"{self.env_id} segment observations must be uint8 screens, got {obs.dtype}")
        screens = obs[:, -1] if obs.ndim == 4 else obs  # (L, H, W): the newest frame of each stack
        big = screens.repeat(self._scale, axis=1).repeat(self._scale, axis=2)
        return np.repeat(big[..., None], 3, axis=3)

    # -- gymnasium envs ------------------------------------------------------------------------------------

    def _init_gym(self) -> None:
        spec = gym.registry.get(self.env_id)
        if spec is None:
            raise self._unsupported("it is neither an ALE game nor a registered gymnasium id")
        mujoco_entry = isinstance(spec.entry_point, str) and spec.entry_point.startswith("gymnasium.envs.mujoco")
        if mujoco_entry:
            _default_mujoco_gl()  # before mujoco's OpenGL module is imported (it reads MUJOCO_GL then)

        def cannot_make(err: Exception) -> ConfigError:  # e.g. Box2D or OpenGL missing
            if mujoco_entry:
                return self._no_mujoco_rendering(err)
            return self._unsupported(f"it cannot be made ({type(err).__name__}: {_one_line(err)})")

        try:
            creator = spec.entry_point if callable(spec.entry_point) else load_env_creator(spec.entry_point)
        except Exception as err:  # noqa: BLE001
            raise cannot_make(err) from None
        modes = (getattr(creator, "metadata", None) or {}).get("render_modes")
        if modes is not None and "rgb_array" not in modes:
            raise self._unsupported(f"it does not draw rgb_array frames (render modes {list(modes)})")
        try:
            try:
                env = gym.make(self.env_id, render_mode="rgb_array", width=self.size, height=self.size)
            except TypeError:  # an env without width and height
                env = gym.make(self.env_id, render_mode="rgb_array")
        except Exception as err:  # noqa: BLE001
            raise cannot_make(err) from None
        self._env = env
        try:
            self._setup_gym(env)
        except BaseException:
            self.close()
            raise

    def _setup_gym(self, env: gym.Env) -> None:
        space_shape = tuple(env.observation_space.shape or ())
        if space_shape != self.obs_shape:
            raise self._unsupported(f"observations of shape {self.obs_shape} do not fit it: its observations "
                                    f"have shape {space_shape}")
        self.fps = float(env.metadata.get("render_fps") or 30)
        obs, _ = env.reset(seed=0)
        set_state = _classic_state_setter(env.unwrapped)
        if set_state is not None:
            self._family, self._set_state = "classic", set_state
            frame = env.render()
        elif _is_mujoco(env.unwrapped):
            self._family = "mujoco"
            unwrapped = env.unwrapped
            self._init_mujoco(unwrapped, np.asarray(obs, np.float64))
            # the first render places a free camera (at the median of the geoms): place it at the model's initial
            # pose, where every segment starts, whatever the reset noise
            unwrapped.set_state(unwrapped.init_qpos, unwrapped.init_qvel)
            _default_mujoco_gl()
            try:
                frame = env.render()
            except Exception as err:  # noqa: BLE001 - no OpenGL context: say so rather than fake frames
                raise self._no_mujoco_rendering(err) from None
        else:
            kind = type(env.unwrapped).__name__
            raise self._unsupported(f"its state cannot be rebuilt from observations ({kind})")
        frame = np.asarray(frame)
        h, w = frame.shape[:2]
        scale = self.size / max(h, w)
        self.frame_shape = (max(1, round(h * scale)), max(1, round(w * scale)))

    def _fit(self, frame: np.ndarray) -> np.ndarray:
        """(h, w, 3) uint8 -> frame_shape, resized with Lanczos where the sizes differ."""
        frame = np.asarray(frame, np.uint8)
        if frame.shape[:2] == self.frame_shape:
            return frame
        from PIL import Image

        h, w = self.frame_shape
        return np.asarray(Image.fromarray(frame).resize((w, h), Image.Resampling.LANCZOS))

    # -- MuJoCo --------------------------------------------------------------------------------------------

    def _init_mujoco(self, unwrapped, obs: np.ndarray) -> None:
        """Find e, the number of leading qpos coordinates the observation leaves out, from a reset's obs."""
        model, data = unwrapped.model, unwrapped.data
        nq, nv = int(model.nq), int(model.nv)
        qpos, qvel = np.asarray(data.qpos, np.float64), np.asarray(data.qvel, np.float64)
        for e in range(min(nq, nv, 3) + 1):
            n = nq - e + nv
            if obs.size >= n and np.allclose(obs[:nq - e], qpos[e:], rtol=0, atol=1e-6) \
                    and np.allclose(obs[nq - e:n], qvel, rtol=0, atol=1e-6) and _translations(model, e):
                self._excluded, self._nq, self._nv, self._dt = e, nq, nv, float(unwrapped.dt)
                return
        raise self._unsupported(f"its observations are not qpos (without up to 3 leading x/y/z coordinates) "
                                f"followed by qvel (nq={nq}, nv={nv}, observation size {obs.size})")

    def _mujoco_frames(self, obs: np.ndarray) -> np.ndarray:
        e, nq, nv = self._excluded, self._nq, self._nv
        obs = obs.astype(np.float64)
        qvel = obs[:, nq - e:nq - e + nv]
        lead = np.zeros((len(obs), e))
        if len(obs) > 1 and e:
            steps = (qvel[1:, :e] + qvel[:-1, :e]) * (self._dt / 2)  # trapezoidal rule between observations
            lead[1:] = np.cumsum(steps, axis=0)
        unwrapped = self._env.unwrapped
        viewer = getattr(getattr(unwrapped, "mujoco_renderer", None), "viewer", None)
        if viewer is not None:  # another env's render() may have made its own OpenGL context current since
            viewer.make_context_current()
        out = np.empty((len(obs), *self.frame_shape, 3), np.uint8)
        for t in range(len(obs)):
            unwrapped.set_state(np.concatenate([lead[t], obs[t, :nq - e]]), qvel[t])
            out[t] = self._fit(self._env.render())
        return out

    def _no_mujoco_rendering(self, err: Exception) -> ConfigError:
        return ConfigError(f"cannot render segments of {self.env_id}: MuJoCo cannot render here with "
                           f"MUJOCO_GL={os.environ.get('MUJOCO_GL')} ({type(err).__name__}: {_one_line(err)}); "
                           f"set MUJOCO_GL to a working backend (egl, osmesa or glfw); without one, only Atari "
                           f"frame stacks and classic control can be rendered")

    def _unsupported(self, reason: str) -> ConfigError:
        return ConfigError(f"cannot render segments of {self.env_id} (observation shape {self.obs_shape}): "
                           f"{reason}; SegmentRenderer renders {RENDERABLE}")


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def _is_atari(env_id: str) -> bool:
    """An ALE game name (breakout) or a gymnasium id made by ale_py (ALE/Breakout-v5, BreakoutNoFrameskip-v4)."""
    try:
        import ale_py  # registers the ALE ids with gymnasium
        import ale_py.roms
    except ImportError:
        return env_id.startswith("ALE/")
    if env_id in ale_py.roms.get_all_rom_ids():
        return True
    spec = gym.registry.get(env_id)
    return spec is not None and isinstance(spec.entry_point, str) and spec.entry_point.startswith("ale_py")


def _classic_state_setter(unwrapped) -> Callable[[np.ndarray], None] | None:
    """A function that sets ``unwrapped``'s state from one observation, for the classic control envs."""
    from gymnasium.envs.classic_control import (AcrobotEnv, CartPoleEnv, Continuous_MountainCarEnv, MountainCarEnv,
                                                PendulumEnv)

    if isinstance(unwrapped, (CartPoleEnv, MountainCarEnv, Continuous_MountainCarEnv)):
        def set_state(obs: np.ndarray) -> None:
            unwrapped.state = obs.copy()  # (x, x_dot, theta, theta_dot) or (position, velocity)
    elif isinstance(unwrapped, PendulumEnv):
        def set_state(obs: np.ndarray) -> None:
            cos, sin, theta_dot = obs
            unwrapped.state = np.array([np.arctan2(sin, cos), theta_dot])
            unwrapped.last_u = None  # the torque is not observed: no arrow
    elif isinstance(unwrapped, AcrobotEnv):
        def set_state(obs: np.ndarray) -> None:
            cos1, sin1, cos2, sin2, dtheta1, dtheta2 = obs
            unwrapped.state = np.array([np.arctan2(sin1, cos1), np.arctan2(sin2, cos2), dtheta1, dtheta2])
    else:
        return None
    return set_state


def _is_mujoco(unwrapped) -> bool:
    try:
        from gymnasium.envs.mujoco import MujocoEnv
    except ImportError:  # mujoco not installed: no env is a MujocoEnv
        return False
    return isinstance(unwrapped, MujocoEnv)


def _translations(model, e: int) -> bool:
    """Whether qpos[:e] and qvel[:e] are the same e translations (slide joints or a free joint's x, y, z),
    so that qvel[:e] integrates to qpos[:e]."""
    import mujoco

    mjt = mujoco.mjtJoint
    for i in range(e):
        joint = int(model.dof_jntid[i])
        kind, qadr, dadr = int(model.jnt_type[joint]), int(model.jnt_qposadr[joint]), int(model.jnt_dofadr[joint])
        if kind == mjt.mjJNT_SLIDE and qadr == dadr == i:
            continue
        if kind == mjt.mjJNT_FREE and qadr == dadr == 0 and i < 3:
            continue
        return False
    return True


def _default_mujoco_gl() -> None:
    """Choose MuJoCo's headless OpenGL backend unless the user did (MUJOCO_GL): egl, or osmesa where only
    libOSMesa is found. gymnasium reads it when an env's first render() creates the context."""
    if os.environ.get("MUJOCO_GL"):
        return
    import ctypes.util

    os.environ["MUJOCO_GL"] = "osmesa" if ctypes.util.find_library("EGL") is None and \
        ctypes.util.find_library("OSMesa") is not None else "egl"
