"""Maximum-entropy inverse RL and what it stands on: the gridworld, demonstrations on disk, soft value
iteration, visitation frequencies against brute-force enumeration, the likelihood gradient against finite
differences, recovery of an expert's visitation frequencies, the reward model it writes, and bad input."""

from __future__ import annotations

import csv
import itertools

import numpy as np
import pytest

from rlrun.algos.maxent_irl import (action_log_likelihood, expected_visits, expert_statistics, log_likelihood,
                                    soft_value_iteration, visitation_frequencies)
from rlrun.algos.value_iteration import soft_policy
from rlrun.cli.train import run_training, validate
from rlrun.core.config import ConfigError
from rlrun.data.demos import DemoRecorder, Demos, check_demos, load_demos, save_demos
from rlrun.envs import lecture
from rlrun.envs.lecture import GridWorld, TabularModel
from rlrun.cli.evaluate import evaluate_checkpoint
from rlrun.core.checkpoint import latest_checkpoint
from rlrun.core.events import read_scalars

GAMMA_1 = "algo.gamma=1"


def small_mdp(seed: int = 0) -> TabularModel:
    """3 states (the last terminal), 2 actions, random stochastic transitions and rewards."""
    rng = np.random.default_rng(seed)
    transitions = rng.dirichlet(np.ones(3), size=(3, 2))
    transitions[2] = 0.0
    return TabularModel(transitions, np.zeros((3, 2)), np.array([False, False, True]), 0)


def brute_force_visits(policy: np.ndarray, model: TabularModel, start: np.ndarray) -> np.ndarray:
    """(T, S): enumerate every prefix s_0 a_0 ... s_t and add its probability to D_t(s_t)."""
    horizon, num_states, num_actions = policy.shape
    visits = np.zeros((horizon, num_states))
    for t in range(horizon):
        for states in itertools.product(range(num_states), repeat=t + 1):
            for actions in itertools.product(range(num_actions), repeat=t):
                p = start[states[0]]
                for k in range(t):
                    if model.terminal[states[k]]:
                        p = 0.0
                    p *= policy[k, states[k], actions[k]] * model.transitions[states[k], actions[k], states[k + 1]]
                if not model.terminal[states[t]]:
                    visits[t, states[t]] += p
    return visits


# ---- dynamic programming against enumeration and finite differences ---------------------------------------

def test_forward_visitation_frequencies_match_brute_force_enumeration_of_trajectories():
    model = small_mdp()
    rewards = np.array([0.3, -0.7, 2.0])
    q, _ = soft_value_iteration(rewards, model, horizon=4)
    policy = soft_policy(q)
    start = np.array([0.6, 0.4, 0.0])
    dp = visitation_frequencies(policy, model, start)
    np.testing.assert_allclose(dp, brute_force_visits(policy, model, start), rtol=0, atol=1e-12)
    assert dp[0] == pytest.approx(start) and dp.sum(1)[-1] < 1.0  # mass leaves through the terminal state


def test_soft_value_is_the_log_partition_function_and_trajectories_are_proportional_to_exp_reward():
    # deterministic 2x2 grid, no slip: P(tau) of the soft policy = exp(R(tau)) / Z(s_0), Z = exp V_0(s_0)
    env = GridWorld(size=(2, 2), feature_map=["ab", "ca"], feature_rewards={"a": 0.1, "b": 1.0, "c": -0.5},
                    slip_prob=0.0, start=(0, 0))
    model, rewards, horizon = env.model(), env.state_rewards(), 3
    q, v0 = soft_value_iteration(rewards, model, horizon)
    policy = soft_policy(q)
    probs, exp_returns = [], []
    for actions in itertools.product(range(5), repeat=horizon):
        s, p, ret = 0, 1.0, 0.0
        for t, a in enumerate(actions):
            ret += rewards[s]
            p *= policy[t, s, a]
            s = int(np.argmax(model.transitions[s, a]))
        probs.append(p)
        exp_returns.append(np.exp(ret))
    probs, exp_returns = np.array(probs), np.array(exp_returns)
    np.testing.assert_allclose(probs, exp_returns / exp_returns.sum(), rtol=1e-12)
    assert v0[0] == pytest.approx(np.log(exp_returns.sum()), abs=1e-12)


def test_likelihood_gradient_is_expert_minus_expected_feature_counts_by_finite_differences():
    env = GridWorld()  # 5x5, slip 0.1: stochastic dynamics
    model, phi, horizon = env.model(), env.state_features(), 8
    rng = np.random.default_rng(3)
    episodes = [(rng.integers(0, 25, size=horizon), rng.integers(0, 5, size=horizon)) for _ in range(40)]
    start, expert_visits = expert_statistics(episodes, 25)
    theta = rng.normal(size=phi.shape[1])

    def likelihood(w: np.ndarray) -> float:
        r = phi @ w
        return log_likelihood(r, soft_value_iteration(r, model, horizon)[1], episodes)

    q, _ = soft_value_iteration(phi @ theta, model, horizon)
    analytic = phi.T @ expert_visits - phi.T @ expected_visits(q, model, start)
    eps = 1e-6
    numeric = np.array([(likelihood(theta + eps * e) - likelihood(theta - eps * e)) / (2 * eps)
                        for e in np.eye(len(theta))])
    np.testing.assert_allclose(analytic, numeric, rtol=0, atol=1e-6)
    assert np.abs(analytic).max() > 0.1  # a real gradient, not zero at a random theta


def test_action_log_likelihood_sums_log_policy_of_the_demonstrated_actions():
    # states 0 and 1 and a terminal 2; from 0 action 0 goes to 1 and action 1 ends; from 1 action 0 goes back
    # to 0 and action 1 ends. r = (1, 0, 0), horizon 2. By hand: Q_1(s, .) = r(s), V_1 = (1 + log 2, log 2, 0);
    # Q_0(0, .) = (1 + V_1(1), 1 + 0) = (1 + log 2, 1), so pi_0(. | 0) = (2/3, 1/3); pi_1 is uniform.
    transitions = np.zeros((3, 2, 3))
    transitions[0, 0, 1] = transitions[0, 1, 2] = transitions[1, 0, 0] = transitions[1, 1, 2] = 1.0
    model = TabularModel(transitions, np.zeros((3, 2)), np.array([False, False, True]), 0)
    q, _ = soft_value_iteration(np.array([1.0, 0.0, 0.0]), model, horizon=2)
    episodes = [(np.array([0, 1]), np.array([0, 1])), (np.array([0]), np.array([1]))]
    expected = (np.log(2 / 3) + np.log(1 / 2) + np.log(1 / 3)) / 2  # the mean over the two episodes
    assert action_log_likelihood(q, episodes) == pytest.approx(expected, abs=1e-12)


# ---- the gridworld ---------------------------------------------------------------------------------------

def test_gridworld_model_moves_slips_and_rewards_like_its_steps():
    env = GridWorld(size=(2, 3), feature_map=["abc", "aab"], feature_rewards={"a": 0.0, "b": 1.0, "c": -1.0},
                    slip_prob=0.5, start=(1, 0))
    model = env.model()
    assert model.transitions.shape == (6, 5, 6) and np.allclose(model.transitions.sum(2), 1.0)
    # from (1, 0) moving right: 0.5 + 0.5/5 to (1, 1); the slips up, down (wall), left (wall), stay
    np.testing.assert_allclose(model.transitions[3, 1], [0.1, 0, 0, 0.3, 0.6, 0], atol=1e-12)
    np.testing.assert_allclose(env.state_rewards(), [0, 1, -1, 0, 0, 1])
    np.testing.assert_allclose(env.state_features()[2], [0, 0, 1])
    obs, _ = env.reset(seed=0)
    assert obs == 3
    counts = np.zeros(6)
    for i in range(4000):
        env.reset(seed=i)
        _, reward, terminated, truncated, _ = env.step(1)
        counts[env.state] += 1
        assert reward == 0.0 and not terminated and not truncated
    np.testing.assert_allclose(counts / 4000, model.transitions[3, 1], atol=0.03)


@pytest.mark.parametrize("kwargs, message", [
    ({"size": (2, 2), "feature_map": ["ab"]}, "do not cover the 2x2 grid"),
    ({"size": (1, 2), "feature_map": ["az"], "feature_rewards": {"a": 1.0}}, "feature 'z'"),
    ({"slip_prob": 1.5}, "slip_prob=1.5"),
    ({"start": (9, 0)}, "start=[9, 0]"),
])
def test_gridworld_refuses_features_that_do_not_cover_the_grid_and_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        GridWorld(**kwargs)


def test_gridworld_config_with_uncovered_features_is_one_config_error(make_cfg):
    cfg = make_cfg("algo=value_iteration", "env=gridworld", "env.kwargs.feature_map=[aaaab,acaaa]")
    with pytest.raises(ConfigError, match="do not cover the 5x5 grid"):
        validate(cfg)


# ---- demonstrations ---------------------------------------------------------------------------------------

def make_demos(**changes) -> Demos:
    fields = dict(env_id="rlrun/GridWorld-v0", obs=np.array([0, 1, 2, 3, 4]), actions=np.array([1, 1, 2, 4, 0]),
                  rewards=np.array([0.0, 1.0, 0.5, 0.0, -1.0], np.float32), episode_lengths=np.array([3, 2]),
                  obs_n=25, action_n=5, source="test")
    fields.update(changes)
    return Demos(**fields)


def test_demonstrations_round_trip_through_their_file(tmp_path):
    path = save_demos(make_demos(), tmp_path / "d.npz")
    demos = load_demos(path)
    assert demos.env_id == "rlrun/GridWorld-v0" and demos.num_episodes == 2 and demos.source == "test"
    np.testing.assert_array_equal(demos.obs, [0, 1, 2, 3, 4])
    np.testing.assert_allclose(demos.returns(), [1.5, -1.0])
    assert [len(o) for o, _ in demos.episodes()] == [3, 2]
    with np.load(path) as raw:  # readable without rlrun
        assert str(raw["kind"]) == "demonstrations" and int(raw["format"]) == 1


@pytest.mark.parametrize("changes, message", [
    ({"episode_lengths": np.array([3, 3])}, "5 observations, 5 actions and 5 rewards for episodes of 6 steps"),
    ({"actions": np.array([1, 1, 2, 4, 7])}, "actions outside Discrete"),
    ({"rewards": np.array([0, np.nan, 0, 0, 0], np.float32)}, "non-finite rewards"),
    ({"episode_lengths": np.array([5, 0])}, "each of at least one step"),
])
def test_inconsistent_demonstrations_are_refused_on_load(tmp_path, changes, message):
    path = save_demos(make_demos(**changes), tmp_path / "d.npz")
    with pytest.raises(ConfigError, match=message):
        load_demos(path, "algo.demos")


def test_unreadable_or_foreign_demonstration_files_are_refused(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="algo.demos=.*junk.npz' is not an .npz archive"):
        load_demos(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ConfigError, match="is not a demonstrations file"):
        load_demos(tmp_path / "other.npz")
    with pytest.raises(ConfigError, match="is not a file"):
        load_demos(tmp_path / "missing.npz")


def test_demonstrations_of_another_env_or_shape_are_refused():
    import gymnasium as gym

    demos = make_demos()
    check_demos(demos, gym.spaces.Discrete(25), gym.spaces.Discrete(5), "rlrun/GridWorld-v0")
    with pytest.raises(ConfigError, match="played on rlrun/GridWorld-v0 but this run's env is CartPole-v1"):
        check_demos(demos, gym.spaces.Discrete(25), gym.spaces.Discrete(5), "CartPole-v1")
    with pytest.raises(ConfigError, match=r"observations are Discrete\(25\) but rlrun/GridWorld-v0 has Discrete\(36\)"):
        check_demos(demos, gym.spaces.Discrete(36), gym.spaces.Discrete(5), "rlrun/GridWorld-v0")
    with pytest.raises(ConfigError, match=r"observations are Discrete\(25\) but .* arrays of shape \(25,\)"):
        check_demos(demos, gym.spaces.Box(0, 1, (25,)), gym.spaces.Discrete(5), "rlrun/GridWorld-v0")


def test_recorder_keeps_only_finished_episodes():
    import gymnasium as gym

    rec = DemoRecorder("x", gym.spaces.Box(-1, 1, (2,)), gym.spaces.Discrete(2), "t")
    for t in range(5):
        rec.add(np.full((1, 2), t, np.float32), np.array([t % 2]), 1.0, episode_end=t == 2)
    demos = rec.demos()
    assert demos.episode_lengths.tolist() == [3] and demos.obs.shape == (3, 2) and demos.actions.tolist() == [0, 1, 0]


# ---- experts, demonstrations from checkpoints, and maxent_irl end to end -----------------------------------

@pytest.fixture(scope="module")
def soft_expert(tmp_path_factory):
    """A soft-optimal expert on the 5x5 gridworld and 1,000 of its episodes as demonstrations."""
    from hydra import compose, initialize_config_module

    root = tmp_path_factory.mktemp("expert")
    with initialize_config_module(version_base="1.3", config_module="rlrun.configs"):
        cfg = compose("config", overrides=["algo=value_iteration", "env=gridworld", GAMMA_1, "algo.soft=true", ])
    run_training(cfg, root / "expert")
    result = evaluate_checkpoint(root / "expert", episodes=1000, save_demos_path=root / "demos.npz")
    return root, result


def expert_visitation(expert_dir) -> np.ndarray:
    """(S,) exact visitation frequencies per step of a soft value-iteration checkpoint on the default gridworld."""
    _, ckpt = latest_checkpoint(expert_dir)
    env = GridWorld()
    q_by_time = ckpt["q_by_steps_left"].numpy()[::-1]
    return expected_visits(q_by_time, env.model(), env.initial_distribution()) / len(q_by_time)


def test_rlrun_eval_writes_the_episodes_it_plays_as_demonstrations(soft_expert):
    root, result = soft_expert
    demos = load_demos(root / "demos.npz")
    assert result["demos"] == str(root / "demos.npz")
    assert demos.env_id == "rlrun/GridWorld-v0" and demos.num_episodes == 1000 and demos.obs_n == 25
    assert (demos.episode_lengths == 20).all()
    np.testing.assert_allclose(demos.returns(), result["returns"], atol=1e-4)
    assert demos.source.endswith(".pt")


def test_maxent_irl_recovers_the_expert_visitation_frequencies_on_a_5x5_gridworld(soft_expert, make_cfg, tmp_path):
    root, _ = soft_expert
    run_training(make_cfg("algo=maxent_irl", "env=gridworld", f"algo.demos={root / 'demos.npz'}"),
                 tmp_path / "irl")
    with open(tmp_path / "irl" / "visitation.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    learned = np.array([float(r["learned"]) for r in rows])
    exact = expert_visitation(root / "expert")
    assert learned.sum() == pytest.approx(1.0) and np.abs(learned - exact).max() < 1e-2
    scalars = read_scalars(tmp_path / "irl")
    gaps = [v for _, v, _ in scalars["irl/feature_count_gap"]]
    assert gaps[-1] < 1e-3 < gaps[0]  # stopped once the feature counts matched
    likelihood = [v for _, v, _ in scalars["irl/log_likelihood"]]
    assert likelihood[-1] > likelihood[0] + 1.0
    assert scalars["irl/true_reward_pearson"][-1][1] > 0.99
    assert "charts/episodic_return" in scalars and "irl/visitation_gap" in scalars
    # the learned reward differs from the true one by about a constant (the letters' one-hot features sum to 1,
    # so a constant is not identifiable); the -1 cells are rarely visited, so their weight is the noisiest
    with open(tmp_path / "irl" / "weights.csv", newline="") as f:
        weights = list(csv.DictReader(f))
    shift = np.array([float(w["learned_weight"]) - float(w["true_weight"]) for w in weights])
    assert [w["feature"] for w in weights] == ["a", "b", "c", "d"] and np.ptp(shift) < 0.3


def test_the_learned_reward_model_gives_each_state_its_learned_reward_in_a_ppo_run(soft_expert, make_cfg, tmp_path):
    from rlrun.envs.factory import make_vec_env
    from rlrun.rlhf.learned_reward import with_learned_reward

    root, _ = soft_expert
    run_training(make_cfg("algo=maxent_irl", "env=gridworld", f"algo.demos={root / 'demos.npz'}",
                          "algo.max_iterations=30"), tmp_path / "irl")
    with open(tmp_path / "irl" / "reward.csv", newline="") as f:
        learned = np.array([float(r["learned_reward"]) for r in csv.DictReader(f)])
    overrides = ("algo=ppo", "env=gridworld", "env.kwargs.one_hot=true", "reward=learned",
                 f"reward.path={tmp_path / 'irl' / 'reward_model.pt'}")
    cfg = make_cfg(*overrides)
    envs = with_learned_reward(cfg, make_vec_env(cfg, 2))
    obs = envs.reset(seed=0)
    for _ in range(5):
        step = envs.step(np.array([1, 2]))
        np.testing.assert_allclose(step.reward, learned[obs.argmax(1)], atol=1e-5)
        obs = step.obs
    envs.close()
    run_training(make_cfg(*overrides, "total_timesteps=1024", "algo.num_envs=2", "algo.num_steps=128"),
                 tmp_path / "ppo")
    assert "charts/learned_episodic_return" in read_scalars(tmp_path / "ppo")
    with pytest.raises(ConfigError, match=r"observations of shape \(25,\) but rlrun/GridWorld-v0 has Discrete\(25\)"):
        validate(make_cfg("algo=ppo", "env=gridworld", "reward=learned", f"reward.path={tmp_path / 'irl' / 'reward_model.pt'}"))


def test_a_maxent_irl_checkpoint_plays_its_soft_policy_with_rlrun_eval(soft_expert, make_cfg, tmp_path):
    root, _ = soft_expert
    run_training(make_cfg("algo=maxent_irl", "env=gridworld", f"algo.demos={root / 'demos.npz'}",
                          "algo.max_iterations=20"), tmp_path / "irl")
    result = evaluate_checkpoint(tmp_path / "irl", episodes=5)
    assert result["episodes"] == 5 and all(n == 20 for n in result["lengths"])


@pytest.mark.parametrize("overrides, message", [
    ((), "algo.demos=None is not allowed: expected the path of a demonstrations .npz"),
    (("env.max_episode_steps=10",), "at least the longest demonstration (20 steps)"),
    (("env.max_episode_steps=null",), "the horizon T of the demonstrations"),
    (("env.kwargs.size=[6,5]", "env.kwargs.feature_map=[aaaab,acaaa,acaca,aaaca,daaaa,aaaaa]"),
     "observations are Discrete(25) but rlrun/GridWorld-v0 has Discrete(30)"),
    (("algo.features=bogus",), "algo.features='bogus' is not allowed"),
    (("algo.tolerance=0",), "algo.tolerance=0"),
])
def test_maxent_irl_bad_input_is_one_config_error(soft_expert, make_cfg, overrides, message):
    root, _ = soft_expert
    demos = () if not overrides else (f"algo.demos={root / 'demos.npz'}",)
    with pytest.raises(ConfigError) as err:
        validate(make_cfg("algo=maxent_irl", "env=gridworld", *demos, *overrides))
    assert message in str(err.value)


def test_maxent_irl_refuses_demonstrations_of_another_env_and_envs_without_features(soft_expert, make_cfg):
    root, _ = soft_expert
    demos = f"algo.demos={root / 'demos.npz'}"
    with pytest.raises(ConfigError, match="played on rlrun/GridWorld-v0 but this run's env is rlrun/RecyclingChain-v0"):
        validate(make_cfg("algo=maxent_irl", "env=recycling", "env.max_episode_steps=20", "algo.features=one_hot", demos))
    with pytest.raises(ConfigError, match="no state features of its own"):
        validate(make_cfg("algo=maxent_irl", "env=recycling", "env.max_episode_steps=20", demos))
    with pytest.raises(ConfigError, match="discrete states"):
        validate(make_cfg("algo=maxent_irl", "env=cartpole", demos))


def test_soft_value_iteration_checkpoint_samples_its_soft_policy(soft_expert):
    root, result = soft_expert
    demos = load_demos(root / "demos.npz")
    _, ckpt = latest_checkpoint(root / "expert")
    assert ckpt["soft"] is True
    # the first actions of 1,000 episodes follow pi_0(a | s_0) of the checkpoint
    q0 = ckpt["q_by_steps_left"].numpy()[-1]
    pi0 = soft_policy(q0)
    starts, first = demos.obs[demos.episode_starts], demos.actions[demos.episode_starts]
    expected = pi0[starts].mean(0)
    observed = np.bincount(first, minlength=5) / len(first)
    np.testing.assert_allclose(observed, expected, atol=0.05)
    assert lecture.GRID_ACTION_NAMES == ("up", "right", "down", "left", "stay")


def test_maxent_irl_resume_gives_the_same_scalars_and_reward(soft_expert, stop_and_resume, tmp_path):
    root, _ = soft_expert
    overrides = ("algo=maxent_irl", "env=gridworld", f"algo.demos={root / 'demos.npz'}", "checkpoint.interval=5",
                 )
    whole, split, ckpt = stop_and_resume(overrides, 30)
    assert ckpt["global_step"] == 30 and len(whole["irl/feature_count_gap"]) > 30
    for tag in whole:
        assert split[tag] == whole[tag], tag
    assert (tmp_path / "split" / "reward.csv").read_text() == (tmp_path / "whole" / "reward.csv").read_text()
