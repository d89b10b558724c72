"""Replay buffer: stacks rebuilt exactly across episode starts, life losses and wrap-around."""

from __future__ import annotations

import numpy as np
import pytest

from rlrun.data.replay import ReplayBuffer


def drive(env, rb, steps, seed, record):
    """Step ``env`` randomly, adding to ``rb``; record[(t, e)] = (obs, next_obs, action, reward, terminated)."""
    rng = np.random.default_rng(seed)
    obs = env.reset(seed=seed)
    n = env.single_action_space.n
    counts = {"terminated_not_end": 0, "episode_end": 0}
    for _ in range(steps):
        actions = rng.integers(0, n, size=env.num_envs)
        step = env.step(actions)
        t = rb.pos
        rb.add(obs, actions, step.reward, step.terminated, step.episode_end, step.final_obs)
        for e in range(env.num_envs):
            nxt = step.final_obs[e] if step.episode_end[e] else step.obs[e]
            record[(t, e)] = (obs[e].copy(), nxt.copy(), actions[e], step.reward[e], step.terminated[e])
        counts["terminated_not_end"] += int((step.terminated & ~step.episode_end).sum())
        counts["episode_end"] += int(step.episode_end.sum())
        obs = step.obs
    return counts


def check_all_valid(rb, record):
    first, count = rb.valid_slots()
    assert count > 0
    t = (first + np.arange(count)) % rb.size_per_env
    for e in range(rb.num_envs):
        b = rb.gather(t, np.full_like(t, e))
        for i, ti in enumerate(t):
            obs, nxt, a, r, term = record[(int(ti), e)]
            np.testing.assert_array_equal(b.obs[i], obs, err_msg=f"obs at slot {ti} env {e}")
            np.testing.assert_array_equal(b.next_obs[i], nxt, err_msg=f"next_obs at slot {ti} env {e}")
            assert b.actions[i] == a and b.rewards[i] == r and b.terminated[i] == float(term)
    return count


@pytest.mark.parametrize("num_envs", [1, 2])
def test_breakout_stacks_match_env_across_boundaries_and_wraparound(make_cfg, num_envs):
    """Every sampleable transition equals what the real AtariVectorEnv returned, after the ring wrapped."""
    from rlrun.envs.factory import make_vec_env

    cfg = make_cfg("env=breakout")
    env = make_vec_env(cfg, num_envs)
    capacity = 600 * num_envs
    rb = ReplayBuffer(capacity, (4, 84, 84), np.uint8, num_envs=num_envs, frame_stack=4, seed=0)
    record = {}
    # short random Breakout episodes are ~150-250 agent steps: 1,500 steps wrap the 600-slot ring
    # twice and cross several life losses and resets
    counts = drive(env, rb, 1500, seed=3, record=record)
    env.close()
    assert rb.full and counts["episode_end"] >= 2 and counts["terminated_not_end"] >= 4
    assert check_all_valid(rb, record) == 600 - 4  # all but the newest and the 3 oldest slots
    assert rb.episode_start.any()
    # the memory: one 84x84 frame per slot
    assert rb.frames.nbytes == capacity * 84 * 84


def test_sampling_never_crosses_an_episode_start():
    """Synthetic frames tagged with their episode id: a sampled stack never mixes two episodes."""
    rb = ReplayBuffer(50, (4, 2, 2), np.uint8, frame_stack=4, seed=1)
    episode = 1
    stack = np.zeros((4, 2, 2), np.uint8)
    stack[-1] = episode
    lengths = [3, 1, 7, 2, 5] * 20
    for length in lengths:
        for i in range(length):
            end = i == length - 1
            new = np.full((2, 2), episode if not end else 0, np.uint8)
            final = np.roll(stack, -1, axis=0)
            final[-1] = episode
            rb.add(stack[None], np.array([0]), np.array([0.0]), np.array([end]), np.array([end]), final[None])
            if end:
                episode = episode % 200 + 1
                stack = np.zeros((4, 2, 2), np.uint8)
                stack[-1] = episode
            else:
                stack = np.roll(stack, -1, axis=0)
                stack[-1] = new
    b = rb.sample(4000)
    for o in list(b.obs) + list(b.next_obs):
        ids = {int(v) for v in np.unique(o)} - {0}
        assert len(ids) == 1, f"stack mixes episodes {ids}"
        # zero padding only at the front of the stack
        nonzero = [bool(f.any()) for f in o]
        assert nonzero == sorted(nonzero)


def test_vector_observations_truncation_and_final_obs():
    """K=1 stores vectors as they are; the successor of an episode end is its final obs."""
    rb = ReplayBuffer(8, (3,), np.float32, frame_stack=1, seed=0)
    obs = np.array([[0.0, 0.0, 0.0]], np.float32)
    for i in range(11):  # wraps the 8-slot ring
        end = i % 4 == 3
        nxt = obs + 1
        rb.add(obs, np.array([i]), np.array([float(i)]), np.array([False]), np.array([end]), nxt)
        obs = np.array([[100.0 * (i + 1)] * 3], np.float32) if end else nxt
    first, count = rb.valid_slots()
    assert (first, count) == (rb.pos, 7)
    t = (first + np.arange(count)) % 8
    b = rb.gather(t, np.zeros_like(t))
    np.testing.assert_array_equal(b.next_obs, b.obs + 1)  # truncated ends bootstrap from their final obs
    np.testing.assert_array_equal(b.actions, b.rewards.astype(np.int64))
    assert not b.terminated.any()


def test_too_small_and_empty_buffers_raise():
    with pytest.raises(ValueError, match="too small"):
        ReplayBuffer(4, (4, 84, 84), np.uint8, frame_stack=4)
    with pytest.raises(ValueError, match="no complete transition"):
        ReplayBuffer(10, (4,), np.float32).sample(1)


def test_one_million_atari_transitions_fit_in_8_gb():
    assert ReplayBuffer.nbytes_for(1_000_000, (4, 84, 84), np.uint8, frame_stack=4) / 1e9 < 7.1
