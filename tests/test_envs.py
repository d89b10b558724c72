"""Env factory: Atari preprocessing shapes, life loss, raw-score reporting; gymnasium ids."""

from __future__ import annotations

import numpy as np
import pytest

from rlrun.envs.factory import make_vec_env


def play_until_episodes(env, n_episodes, seed, max_steps=20_000):
    """Random play until ``n_episodes`` ended; returns per-step records and the episodes reported."""
    rng = np.random.default_rng(seed)
    obs = env.reset(seed=seed)
    steps, episodes = [], []
    for _ in range(max_steps):
        step = env.step(rng.integers(0, env.single_action_space.n, size=env.num_envs))
        steps.append((obs, step))
        episodes += step.episodes
        obs = step.obs
        if len(episodes) >= n_episodes:
            break
    return steps, episodes


def test_breakout_observations_are_stacked_84x84_uint8_and_zero_padded_at_reset(make_cfg):
    env = make_vec_env(make_cfg("env=breakout"), 2)
    obs = env.reset(seed=0)
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
    assert env.single_observation_space.shape == (4, 84, 84) and env.frame_stack == 4
    assert not obs[:, :3].any() and obs[:, 3].any()  # [0, 0, 0, f0]
    step = env.step(np.zeros(2, np.int64))
    np.testing.assert_array_equal(step.obs[:, :3], obs[:, 1:])  # the stack slides by one frame
    env.close()


def test_breakout_life_loss_terminates_for_learning_but_the_episode_reports_all_lives(make_cfg):
    env = make_vec_env(make_cfg("env=breakout"), 1)
    steps, episodes = play_until_episodes(env, 1, seed=1)
    env.close()
    assert len(episodes) == 1
    terminated = [s.terminated[0] for _, s in steps]
    ends = [s.episode_end[0] for _, s in steps]
    assert sum(terminated) == 5 and sum(ends) == 1 and ends[-1] and terminated[-1]  # 5 lives, one game
    for obs, s in steps[:-1]:  # a lost life does not reset the frame stack
        np.testing.assert_array_equal(s.obs[0, :3], obs[0, 1:])
    raw = sum(float(s.reward[0]) for _, s in steps)
    assert episodes[0] == (raw, len(steps))
    assert not steps[-1][1].obs[0, :3].any()  # the next game starts zero-padded


def test_space_invaders_reports_the_raw_unclipped_score(make_cfg):
    """Space Invaders pays 5-30 points per alien: the reported return is the game score, not a count."""
    env = make_vec_env(make_cfg("env=atari", "env.id=space_invaders"), 1)
    steps, episodes = play_until_episodes(env, 1, seed=0)
    env.close()
    rewards = np.array([s.reward[0] for _, s in steps])
    assert rewards.max() >= 5
    assert episodes[0][0] == rewards.sum() > (rewards > 0).sum()


def test_without_life_loss_only_game_over_terminates(make_cfg):
    env = make_vec_env(make_cfg("env=breakout", "preprocessing.terminal_on_life_loss=false"), 1)
    steps, episodes = play_until_episodes(env, 1, seed=1)
    env.close()
    assert sum(s.terminated[0] for _, s in steps) == 1 and steps[-1][1].terminated[0]


@pytest.mark.parametrize("vectorized", ["false", "true"])
def test_gym_env_final_obs_and_truncation(make_cfg, vectorized):
    env = make_vec_env(make_cfg("env=cartpole", "env.max_episode_steps=5", f"env.vectorized={vectorized}"), 2)
    obs = env.reset(seed=0)
    assert obs.shape == (2, 4) and obs.dtype == np.float32
    prev = obs
    for i in range(5):
        step = env.step(np.zeros(2, np.int64))
        if i < 4:
            prev = step.obs
    assert step.truncated.all() and step.episode_end.all() and not step.terminated.any()
    assert not np.allclose(step.final_obs, step.obs)  # obs is the next episode's first
    assert not np.allclose(step.final_obs, prev)       # final_obs is the 5th step's observation
    assert [length for _, length in step.episodes] == [5, 5]
    assert [ret for ret, _ in step.episodes] == [5.0, 5.0]
    env.close()


def test_numpy_vectorized_cartpole_resets_in_the_same_step_and_pays_every_step(make_cfg):
    """No dummy reset step with reward 0 (CartPoleVectorEnv's own NEXT_STEP autoreset): every step pays 1."""
    env = make_vec_env(make_cfg("env=cartpole", "env.vectorized=true"), 8)
    env.reset(seed=0)
    rng, episodes = np.random.default_rng(0), []
    for _ in range(300):
        step = env.step(rng.integers(0, 2, size=8))
        assert (step.reward == 1.0).all()
        assert (np.abs(step.obs[step.episode_end]) <= 0.05).all()  # fresh episodes start near 0
        episodes += step.episodes
    assert len(episodes) > 50 and all(ret == length for ret, length in episodes)
