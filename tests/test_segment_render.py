"""SegmentRenderer: frames re-created from stored observations, checked against the envs' own render()."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from rlrun.core.config import ConfigError
from rlrun.envs.render import SegmentRenderer

CLASSIC = ["CartPole-v1", "MountainCar-v0", "MountainCarContinuous-v0", "Pendulum-v1", "Acrobot-v1"]


def own_frames(env_id: str, steps: int, seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(observations, the env's own render() of each) along a random walk, float32 as segments store them."""
    env = gym.make(env_id, render_mode="rgb_array")
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    observations, frames = [], []
    for _ in range(steps):
        if env_id == "Pendulum-v1":
            env.unwrapped.last_u = None  # no torque arrow: the torque is not in the observation
        observations.append(obs)
        frames.append(env.render().copy())
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    return np.array(observations, np.float32), np.array(frames)


@pytest.mark.parametrize("env_id", CLASSIC)
def test_classic_control_frames_equal_the_envs_own_render(env_id):
    obs, expected = own_frames(env_id, steps=12)
    size = max(expected.shape[1:3])  # the env's own resolution: no resizing
    with SegmentRenderer(env_id, obs.shape[1:], size=size) as renderer:
        frames = renderer.frames(obs)
    assert frames.dtype == np.uint8 and frames.shape == expected.shape
    np.testing.assert_array_equal(frames, expected)
    assert len({f.tobytes() for f in frames}) > 1  # the walk shows different states


def cart_column(frame: np.ndarray) -> float:
    """Mean column of the cart's dark pixels (rows that are mostly dark, the track line, left out)."""
    dark = (frame < 80).all(axis=-1)
    dark[dark.mean(axis=1) > 0.5] = False
    assert dark.sum() > 20
    return float(np.nonzero(dark)[1].mean())


def test_cartpole_cart_moves_in_the_direction_of_its_position():
    with SegmentRenderer("CartPole-v1", (4,)) as renderer:
        assert renderer.fps == 50.0  # CartPole's render_fps
        frames = renderer.frames(np.array([[-1.0, 0, 0, 0], [0.0, 0, 0, 0], [1.5, 0, 0.1, 0]], np.float32))
    assert frames.shape == (3, 107, 160, 3) and frames.dtype == np.uint8  # 600x400 scaled to a longer side of 160
    left, middle, right = map(cart_column, frames)
    assert left < middle < right
    assert middle == pytest.approx(80, abs=3)  # x=0 is the middle of the screen


def test_atari_frames_are_the_newest_screen_scaled_up_in_gray():
    rng = np.random.default_rng(0)
    obs = rng.integers(0, 256, size=(3, 4, 84, 84), dtype=np.uint8)
    renderer = SegmentRenderer("breakout", (4, 84, 84))
    assert renderer.fps == 15.0
    frames = renderer.frames(obs)
    assert frames.shape == (3, 168, 168, 3) and frames.dtype == np.uint8
    for t in range(3):
        upscaled = np.kron(obs[t, -1], np.ones((2, 2), np.uint8))
        for c in range(3):
            np.testing.assert_array_equal(frames[t, :, :, c], upscaled)
    single = SegmentRenderer("ALE/Breakout-v5", (84, 84), size=84).frames(obs[:, -1])
    np.testing.assert_array_equal(single, np.repeat(obs[:, -1, :, :, None], 3, axis=3))
    with pytest.raises(ValueError, match="uint8"):
        renderer.frames(obs.astype(np.float32))
    renderer.close()


def test_frames_of_a_segment_of_the_wrong_shape_are_refused():
    with SegmentRenderer("CartPole-v1", (4,)) as renderer:
        with pytest.raises(ValueError, match="CartPole-v1"):
            renderer.frames(np.zeros((5, 3), np.float32))
        assert renderer.frames(np.zeros((0, 4), np.float32)).shape == (0, 107, 160, 3)


@pytest.mark.parametrize("env_id, obs_shape", [
    ("LunarLander-v3", (8,)),        # Box2D: its state cannot be rebuilt from an observation (or not installed)
    ("NoSuchEnv-v9", (3,)),          # not an env at all
    ("CartPole-v1", (5,)),           # the wrong observation shape
    ("breakout", (210, 160, 3)),     # an RGB screen, not a frame stack
    ("InvertedDoublePendulum-v5", (9,)),  # MuJoCo, but observes sines and cosines of qpos
])
def test_what_cannot_be_rendered_is_refused_naming_the_env(env_id, obs_shape):
    with pytest.raises(ConfigError) as err:
        SegmentRenderer(env_id, obs_shape)
    message = str(err.value)
    assert env_id in message and "\n" not in message
    assert "CartPole" in message and "Atari" in message and "MuJoCo" in message  # what can be rendered


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # gymnasium's half-made viewer's __del__
def test_mujoco_that_cannot_render_is_a_config_error(monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "no-such-backend")
    with pytest.raises(ConfigError, match="HalfCheetah-v5.*MuJoCo cannot render here"):
        SegmentRenderer("HalfCheetah-v5", (17,))


def mujoco_renderer(env_id: str, obs_shape: tuple[int, ...], size: int) -> SegmentRenderer:
    try:
        return SegmentRenderer(env_id, obs_shape, size=size)
    except ConfigError as err:
        if "MuJoCo cannot render here" in str(err):
            pytest.skip(str(err))
        raise


def test_halfcheetah_frames_match_the_envs_own_render_at_the_same_states():
    import mujoco

    size = 64
    renderer = mujoco_renderer("HalfCheetah-v5", (17,), size)
    assert renderer.fps == 20.0 and renderer.frame_shape == (size, size)
    env = gym.make("HalfCheetah-v5", render_mode="rgb_array", width=size, height=size)
    obs, _ = env.reset(seed=1)
    env.action_space.seed(1)
    unwrapped = env.unwrapped
    qpos, qvel = unwrapped.data.qpos.copy(), unwrapped.data.qvel.copy()
    unwrapped.set_state(unwrapped.init_qpos, unwrapped.init_qvel)
    env.render()  # the free camera is placed at the first render: at the initial pose, as the renderer's
    qpos[0] = 0.0  # segments start at x = 0 (x is not observed)
    unwrapped.set_state(qpos, qvel)
    observations, expected = [obs], [env.render().copy()]
    for _ in range(11):
        obs = env.step(env.action_space.sample())[0]
        mujoco.mj_forward(unwrapped.model, unwrapped.data)  # positions of the state reached, not a substep before
        observations.append(obs)
        expected.append(env.render().copy())
    env.close()
    assert unwrapped.data.qpos[0] != 0.0
    expected = np.array(expected)

    frames = renderer.frames(np.array(observations, np.float32))
    renderer.close()
    assert frames.shape == (12, size, size, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames[0], expected[0])

    def differing(a: np.ndarray, b: np.ndarray) -> float:
        return float((np.abs(a.astype(int) - b.astype(int)).max(axis=-1) > 30).mean())

    ours = [differing(frames[t], expected[t]) for t in range(12)]
    between_steps = [differing(expected[t], expected[t + 1]) for t in range(11)]
    assert max(ours) < 0.03  # x is integrated from velocities: the body may be a pixel off
    assert np.mean(ours) < np.mean(between_steps) / 3


def test_mujoco_renderers_of_several_envs_each_draw_their_own():
    states = np.array([[0.0, 0.0, 0, 0], [0.0, 0.8, 0, 0]], np.float32)  # cart at 0, pole upright and tilted
    first = mujoco_renderer("InvertedPendulum-v5", (4,), 48)
    alone = first.frames(states)
    second = mujoco_renderer("Hopper-v5", (11,), 48)  # a second OpenGL context, current once it has rendered
    try:
        assert (alone[0] != alone[1]).any()
        hopper = second.frames(np.zeros((2, 11), np.float32))
        assert hopper.shape == (2, 48, 48, 3) and second.fps == 125.0
        np.testing.assert_array_equal(first.frames(states), alone)
    finally:
        first.close()
        second.close()
