"""The lecture environments: dynamics, exact models, Monte-Carlo values and their config checks."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from rlrun.cli.train import validate
from rlrun.core.config import ConfigError
from rlrun.envs.factory import check_gamma, discrete_states, make_vec_env
from rlrun.envs.reference import tabular_model
from rlrun.envs.lecture import LEFT, RIGHT


def test_recycling_chain_walks_right_for_the_lectures_return_of_11():
    env = gym.make("rlrun/RecyclingChain-v0")
    obs, _ = env.reset(seed=0)
    assert obs == 1  # the lecture's state 2
    steps = [env.step(RIGHT) for _ in range(3)]
    assert [s[0] for s in steps] == [2, 3, 4]
    assert [s[1] for s in steps] == [0.0, 1.0, 10.0]
    assert [s[2] for s in steps] == [False, False, True]
    env.reset()
    obs, reward, terminated, _, _ = env.step(LEFT)
    assert (obs, reward, terminated) == (0, 2.0, True)  # the garbage can


def test_chain_model_matches_its_steps_and_walls_earn_nothing():
    env = gym.make("rlrun/RecyclingChain-v0", rewards=[1, 2, 3], length=3, terminal_states=[], start=0).unwrapped
    model = env.model()
    assert model.transitions.shape == (3, 2, 3) and model.rewards.shape == (3, 2)
    assert model.transitions[0, LEFT, 0] == 1.0 and model.rewards[0, LEFT] == 0.0  # bumping into the wall
    assert model.transitions[0, RIGHT, 1] == 1.0 and model.rewards[0, RIGHT] == 2.0
    assert model.rewards[2, LEFT] == 2.0 and model.rewards[2, RIGHT] == 0.0
    assert not model.terminal.any() and model.start == 0


def test_one_hot_observations_and_the_trap():
    env = gym.make("rlrun/RecyclingChain-v0", one_hot=True)
    obs, _ = env.reset()
    np.testing.assert_array_equal(obs, [0, 1, 0, 0, 0])
    trap = gym.make("rlrun/ExplorationTrap-v0")
    trap.reset()
    assert [trap.step(a)[1:3] for a in range(3)] == [(0.0, True), (1.0, True), (1000.0, True)]
    model = trap.unwrapped.model()
    np.testing.assert_array_equal(model.rewards[0], [0, 1, 1000])
    assert model.terminal.tolist() == [False, True]


def test_random_walk_moves_by_one_with_noise_and_ends_outside_the_interval():
    env = gym.make("rlrun/NoisyRandomWalk-v0")
    env.reset(seed=3)
    moves = []
    x = 0.0
    for _ in range(2000):
        obs, reward, terminated, _, _ = env.step(RIGHT)
        assert reward == -1.0
        moves.append(obs[0] - x)
        x = obs[0]
        if terminated:
            assert not -3 <= x <= 3
            x = env.reset()[0][0]
    moves = np.array(moves)
    assert moves.mean() == pytest.approx(1.0, abs=0.03) and moves.std() == pytest.approx(0.25, abs=0.03)


def test_monte_carlo_values_of_the_random_walk_agree_with_simulated_episodes():
    walk = gym.make("rlrun/NoisyRandomWalk-v0").unwrapped
    rng = np.random.default_rng(0)
    values = walk.monte_carlo_values(np.array([0.0, 2.9, -2.9]), np.array([0.5, 0.5]), 1.0, 4000, rng)
    assert values[1] == pytest.approx(values[2], abs=0.3)  # symmetric
    assert -12.0 < values[0] < -10.5 and values[1] > values[0] + 4  # near an end, fewer steps are left
    # against episodes of the gymnasium env itself
    env = gym.make("rlrun/NoisyRandomWalk-v0")
    env.reset(seed=1)
    lengths = []
    for _ in range(3000):
        env.reset()
        n, done = 0, False
        while not done:
            done = env.step(int(rng.integers(2)))[2]
            n += 1
        lengths.append(n)
    # the lengths' standard deviation is about 9: standard errors 0.16 (3,000 episodes) and 0.14 (4,000 walks)
    assert -np.mean(lengths) == pytest.approx(values[0], abs=0.8)
    # a first action fixed to RIGHT from near the right end leaves at once
    q_right = walk.monte_carlo_values(np.array([2.9]), np.array([0.5, 0.5]), 1.0, 2000, rng, first_action=RIGHT)
    assert q_right[0] == pytest.approx(-1.0, abs=0.01)


def test_lecture_envs_run_in_the_vector_env_and_keep_their_state(make_cfg):
    envs = make_vec_env(make_cfg("algo=dqn", "env=recycling"), 2)
    obs = envs.reset(seed=0)
    assert obs.tolist() == [1, 1]
    result = envs.step(np.array([RIGHT, LEFT]))
    assert result.reward.tolist() == [0.0, 2.0] and result.episode_end.tolist() == [False, True]
    assert result.episodes == [(2.0, 1)]
    state = envs.get_state()
    assert state is not None  # plain-attribute envs are saved with checkpoints


@pytest.mark.parametrize("overrides, key, allowed", [
    (["env.kwargs.terminal_states=[]"], "env.max_episode_steps", "a step limit"),
    (["env.kwargs.rewards=[1,2]"], "env.kwargs", "rewards has 2 entries: expected one per state, 5"),
    (["env.kwargs.start=0"], "env.kwargs", "start=0 is not allowed: it is a terminal state"),
    (["env.kwargs.start=7"], "env.kwargs", "state index 7 is not allowed"),
    (["env=random_walk", "env.kwargs.start=5.0"], "env.kwargs", "expected low < start < high"),
])
def test_bad_lecture_env_values_give_one_clear_error(make_cfg, overrides, key, allowed):
    cfg = make_cfg("algo=dqn", "env=recycling", *overrides)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert str(err.value).startswith(key) and allowed in str(err.value)


def test_gamma_1_is_refused_where_a_policy_can_keep_an_episode_going_forever(make_cfg):
    with pytest.raises(ConfigError, match=r"algo.gamma=1.0 is not allowed: expected a discount below 1"):
        check_gamma(make_cfg("algo=dqn", "env=recycling", "algo.gamma=1.0"))
    assert check_gamma(make_cfg("algo=dqn", "env=recycling", "algo.gamma=1.0", "env.max_episode_steps=3")) == 1.0
    assert check_gamma(make_cfg("algo=dqn", "env=trap", "algo.gamma=1.0")) == 1.0  # every action ends the episode
    assert check_gamma(make_cfg("algo=dqn", "env=random_walk", "algo.gamma=1.0")) == 1.0
    with pytest.raises(ConfigError, match="algo.gamma=1.5 is not allowed: expected a number >= 0.0 and <= 1.0"):
        check_gamma(make_cfg("algo=dqn", "env=recycling", "algo.gamma=1.5"))


def test_tabular_models_and_the_continuous_state_refusal(make_cfg):
    assert discrete_states(make_cfg("algo=dqn", "env=recycling")) == 5
    model = tabular_model(make_cfg("algo=dqn", "env=recycling"))
    assert model.rewards[3, RIGHT] == 10.0 and model.terminal.tolist() == [True, False, False, False, True]
    lake = tabular_model(make_cfg("algo=dqn", "env=gym", "env.id=FrozenLake-v1", "+env.kwargs.is_slippery=false"))
    assert lake.transitions.shape == (16, 4, 16) and lake.terminal[15] and lake.rewards[14, 2] == 1.0
    for env in ("random_walk", "cartpole", "breakout"):
        with pytest.raises(ConfigError, match=r"^env=.* is not allowed: expected an env with discrete states"):
            discrete_states(make_cfg("algo=dqn", f"env={env}"))
    with pytest.raises(ConfigError, match="is not allowed: expected an env with discrete states"):
        discrete_states(make_cfg("algo=dqn", "env=recycling", "env.kwargs.one_hot=true"))
