"""Tabular methods: value iteration against the lecture's Q-tables and hand computations, tabular
Q-learning and the vanilla Q-network on the recycling chain, the exploration trap with and without
exploration, rlrun-eval of their checkpoints, resume, and bad input."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from rlrun.algos.value_iteration import bellman_backup, solve
from rlrun.cli.train import run_training, validate
from rlrun.core.config import ConfigError
from rlrun.envs import lecture
from rlrun.envs.reference import tabular_model
from rlrun.cli.evaluate import evaluate_checkpoint
from rlrun.core.checkpoint import latest_checkpoint
from rlrun.core.events import read_scalars

# The lecture's Q-table at gamma 0.9 (rows S1..S5 = indices 0..4, columns left, right; terminal rows 0):
# Q(S4, right) = 10; Q(S3, right) = 1 + .9 * 10 = 10; Q(S2, right) = 0 + .9 * 10 = 9; Q(S2, left) = 2;
# Q(S3, left) = .9 * V(S2) = .9 * 9 = 8.1; Q(S4, left) = .9 * V(S3) = 9.
LECTURE_Q = [[0, 0], [2, 9], [8.1, 10], [9, 10], [0, 0]]


def read_csv(path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def read_table(path) -> np.ndarray:
    header, rows = read_csv(path)
    return np.array([[float(x) for x in row[1:]] for row in rows])


def returns(run_dir) -> list[float]:
    return [v for _, v, _ in read_scalars(run_dir)["charts/episodic_return"]]


# ---- value iteration --------------------------------------------------------------------------------

def test_value_iteration_gives_the_lecture_q_table_at_gamma_09(make_cfg, tmp_path):
    metric = run_training(make_cfg("+experiment=lecture/recycling_qtable"), tmp_path / "run")
    header, _ = read_csv(tmp_path / "run" / "q_table.csv")
    assert header == ["state", "left", "right"]
    np.testing.assert_allclose(read_table(tmp_path / "run" / "q_table.csv"), LECTURE_Q, rtol=0, atol=1e-9)
    np.testing.assert_allclose(read_table(tmp_path / "run" / "v_table.csv")[:, 0], [0, 9, 10, 10, 0], atol=1e-9)
    _, policy = read_csv(tmp_path / "run" / "policy.csv")
    assert [row[2] for row in policy[1:4]] == ["right", "right", "right"]
    _, (summary,) = read_csv(tmp_path / "run" / "optimal_return.csv")
    assert summary[:4] == ["1", "", "0.9", "9.0"] and summary[5] == "True"
    scalars = read_scalars(tmp_path / "run")
    residuals = [v for _, v, _ in scalars["losses/bellman_residual"]]
    assert residuals[-1] < 1e-10 and len(residuals) == int(summary[4])  # one per sweep, global_step = sweeps
    assert scalars["charts/optimal_return"][-1][1] == pytest.approx(9.0)
    assert metric == 11.0 and returns(tmp_path / "run") == [11.0]  # right, right, right: 0 + 1 + 10 undiscounted


def test_three_minute_rule_at_gamma_1_gives_11_by_backward_induction(make_cfg, tmp_path):
    metric = run_training(make_cfg("+experiment=lecture/recycling_return_gamma1"), tmp_path / "run")
    _, (summary,) = read_csv(tmp_path / "run" / "optimal_return.csv")
    assert summary[:4] == ["1", "3", "1.0", "11.0"]
    # Q with 3 steps left, by hand (V_h = best return with h steps left, V_1 = (0, 2, 1, 10, 0)):
    # S2: left 2, right 0 + V_2(S3) = 0 + max(0 + V_1(S2), 1 + V_1(S4)) = 11
    # S3: left 0 + V_2(S2) = max(2, 0 + V_1(S3)) = 2, right 1 + V_2(S4) = 1 + max(0 + V_1(S3), 10) = 11
    # S4: left 0 + V_2(S3) = 11 (back to S3, enter S4 again for +1, then +10), right 10
    np.testing.assert_allclose(read_table(tmp_path / "run" / "q_table.csv"),
                               [[0, 0], [2, 11], [2, 11], [11, 10], [0, 0]], rtol=0, atol=1e-9)
    header, rows = read_csv(tmp_path / "run" / "policy_by_steps_left.csv")
    assert header == ["state", "steps_left_3", "steps_left_2", "steps_left_1"]
    assert rows[3] == ["3", "left", "right", "right"]
    # the played policy uses the steps actually left: right, right, right = 11 (always "left" in S4,
    # as Q with 3 steps left says, would return 0 + 1 + 0 = 1)
    assert metric == 11.0
    result = evaluate_checkpoint(tmp_path / "run", episodes=2)
    assert result["returns"] == [11.0, 11.0] and result["lengths"] == [3, 3]


def test_value_iteration_of_a_variant_chain_by_hand():
    # 4 states, rewards (5, 0, 0, 3) on entering, states 0 and 3 terminal, start 1, gamma 0.5:
    # Q(2, right) = 3; Q(1, left) = 5; V(1) = max(5, .5 V(2)) = 5; Q(2, left) = .5 * 5 = 2.5;
    # V(2) = 3; Q(1, right) = .5 * 3 = 1.5
    model = lecture.RecyclingChain(length=4, rewards=[5, 0, 0, 3], terminal_states=[0, 3], start=1).model()
    q, sweeps, converged = solve(model, gamma=0.5, tolerance=1e-12, max_iterations=100)
    np.testing.assert_allclose(q, [[0, 0], [5, 1.5], [2.5, 3], [0, 0]], rtol=0, atol=1e-12)
    assert converged and sweeps == 3  # the third sweep changes nothing
    # one backup from zero is the immediate reward
    np.testing.assert_array_equal(bellman_backup(np.zeros((4, 2)), model, 0.5), [[0, 0], [5, 0], [0, 3], [0, 0]])


def test_chain_without_terminal_states_and_a_step_limit_by_hand(make_cfg, tmp_path):
    # 3 states, rewards (1, 0, 4), no terminal state, start 1, 2 steps, gamma 1; moving off an end stays, reward 0.
    # 1 step left: Q_1 = [(0, 0), (1, 4), (0, 0)]; V_1 = (0, 4, 0)
    # 2 steps left: S0 (0 + V_1(0), 0 + V_1(1)) = (0, 4); S1 (1 + 0, 4 + 0) = (1, 4); S2 (0 + 4, 0 + 0) = (4, 0)
    cfg = make_cfg("algo=value_iteration", "env=recycling", "env.kwargs.length=3", "env.kwargs.rewards=[1,0,4]",
                   "env.kwargs.terminal_states=[]", "env.max_episode_steps=2", "algo.gamma=1.0", "eval.episodes=3")
    metric = run_training(cfg, tmp_path / "run")
    np.testing.assert_allclose(read_table(tmp_path / "run" / "q_table.csv"), [[0, 4], [1, 4], [4, 0]], atol=1e-12)
    _, (summary,) = read_csv(tmp_path / "run" / "optimal_return.csv")
    assert summary[3] == "4.0" and metric == 4.0  # right (4), then a tie with 1 step left: left (0)


def test_value_iteration_of_frozenlake_without_slipping(make_cfg, tmp_path):
    cfg = make_cfg("algo=value_iteration", "env=gym", "env.id=FrozenLake-v1", "+env.kwargs.is_slippery=false",
                   "algo.gamma=0.9", "eval.episodes=2")
    model = tabular_model(cfg)
    assert model.transitions.shape == (16, 4, 16) and model.terminal.sum() == 5 and model.start == 0  # 4 holes, goal
    metric = run_training(cfg, tmp_path / "run")
    _, (summary,) = read_csv(tmp_path / "run" / "optimal_return.csv")
    assert float(summary[3]) == pytest.approx(0.9 ** 5, abs=1e-9)  # 6 moves to the goal, reward 1 on the last
    header, _ = read_csv(tmp_path / "run" / "q_table.csv")
    assert header == ["state", "left", "down", "right", "up"]
    assert metric == 1.0  # the greedy policy reaches the goal


def test_value_iteration_of_the_trap(make_cfg, tmp_path):
    run_training(make_cfg("algo=value_iteration", "env=trap"), tmp_path / "run")
    header, rows = read_csv(tmp_path / "run" / "policy.csv")
    np.testing.assert_array_equal(read_table(tmp_path / "run" / "q_table.csv"), [[0, 1, 1000], [0, 0, 0]])
    assert rows[0][1:] == ["2", "a2"]


# ---- Q-learning -------------------------------------------------------------------------------------

def test_tabular_q_learning_learns_the_lecture_q_table(make_cfg, tmp_path):
    cfg = make_cfg("+experiment=lecture/recycling_qtable_q_learning", "total_timesteps=3000")
    run_training(cfg, tmp_path / "run")
    q = read_table(tmp_path / "run" / "q_table.csv")
    error = np.abs(q[1:4] - np.array(LECTURE_Q)[1:4]).max()
    assert error < 0.05, q  # measured 0.004 (seeds 1-3 within 0.005)
    np.testing.assert_array_equal(q[[0, 4]], 0.0)  # nothing is ever done in a terminal state
    scalars = read_scalars(tmp_path / "run")
    epsilons = [v for _, v, _ in scalars["charts/epsilon"]]
    assert epsilons[0] == 1.0 and epsilons[-1] == pytest.approx(0.05) and len(epsilons) == 30  # every 100 steps
    td = [v for _, v, _ in scalars["losses/td_error"]]
    assert td[-1] < 0.1 < max(td[:5])  # large while Q is far from Q*, near 0 once learned
    result = evaluate_checkpoint(tmp_path / "run", episodes=3, epsilon=0.0)
    assert result["returns"] == [11.0] * 3


def test_q_learning_bootstraps_through_the_step_limit(make_cfg, tmp_path):
    # 3 states, rewards (1, 0, 4), no terminal state, episodes cut after 2 steps, gamma 0.5. A time limit is
    # not part of the MDP: bootstrapping from the final observation learns the unlimited Q*, by hand
    # V(1) = 4 + .5 V(2), V(2) = .5 V(1) (bounce 1 -> 2 -> 1 ...) -> V(1) = 16/3, V(2) = V(0) = 8/3;
    # Q(0) = (.5 V(0), .5 V(1)); Q(1) = (1 + .5 V(0), 4 + .5 V(2)); Q(2) = (.5 V(1), .5 V(2)).
    # (Not bootstrapping there would learn Q(1, right) = 4 + .5 * max Q_1(2) = 4.)
    cfg = make_cfg("algo=q_learning", "env=recycling", "env.kwargs.length=3", "env.kwargs.rewards=[1,0,4]",
                   "env.kwargs.terminal_states=[]", "env.max_episode_steps=2", "algo.gamma=0.5",
                   "algo.learning_rate=0.5", "total_timesteps=3000")
    run_training(cfg, tmp_path / "run")
    expected = [[4 / 3, 8 / 3], [7 / 3, 16 / 3], [8 / 3, 4 / 3]]
    np.testing.assert_allclose(read_table(tmp_path / "run" / "q_table.csv"), expected, rtol=0, atol=1e-3)


def test_vanilla_q_network_on_one_hot_states_learns_the_lecture_q_table(make_cfg, tmp_path):
    cfg = make_cfg("+experiment=lecture/recycling_qtable_qnetwork", "total_timesteps=8000")
    run_training(cfg, tmp_path / "run")
    q = read_table(tmp_path / "run" / "q_table.csv")  # the network on each one-hot state
    assert q.shape == (5, 2)
    assert np.abs(q[1:4] - np.array(LECTURE_Q)[1:4]).max() < 0.01, q  # measured 3.4e-5 (seeds 1-5: at most 3.5e-4)
    _, ckpt = latest_checkpoint(tmp_path / "run")
    np.testing.assert_array_equal(ckpt["q_table"].numpy(), q)
    assert ckpt["q_network"]["net.0.weight"].shape == (64, 5)
    assert evaluate_checkpoint(tmp_path / "run", episodes=2)["returns"] == [11.0, 11.0]


@pytest.mark.slow
def test_vanilla_q_network_lecture_experiment_reaches_the_exact_table(make_cfg, tmp_path):
    run_training(make_cfg("+experiment=lecture/recycling_qtable_qnetwork"), tmp_path / "run")
    q = read_table(tmp_path / "run" / "q_table.csv")
    assert np.abs(q[1:4] - np.array(LECTURE_Q)[1:4]).max() < 1e-3, q  # measured below 1e-6 for seeds 1-10


def test_greedy_learner_is_trapped_at_reward_1(make_cfg, tmp_path):
    metric = run_training(make_cfg("+experiment=lecture/trap_greedy", "total_timesteps=300"), tmp_path / "run")
    # episode 1: argmax(.5, .4, .3) = 0, reward 0 -> Q = (0, .4, .3); episode 2: action 1, reward 1 -> (0, 1, .3);
    # from then on action 1 forever
    np.testing.assert_array_equal(read_table(tmp_path / "run" / "q_table.csv"), [[0.0, 1.0, 0.3]])
    rets = returns(tmp_path / "run")
    assert len(rets) == 300 and rets[0] == 0.0 and set(rets[1:]) == {1.0}
    assert metric == 1.0


def test_epsilon_greedy_learner_finds_the_1000(make_cfg, tmp_path):
    metric = run_training(make_cfg("+experiment=lecture/trap_epsilon_greedy"), tmp_path / "run")
    np.testing.assert_array_equal(read_table(tmp_path / "run" / "q_table.csv"), [[0.0, 1.0, 1000.0]])
    _, policy = read_csv(tmp_path / "run" / "policy.csv")
    assert policy == [["0", "2", "a2"]]
    rets = returns(tmp_path / "run")
    assert rets[:2] == [0.0, 1.0] and 1000.0 in rets  # found in episode 7 with seed 1 (seeds 1-10: 6 to 302)
    assert metric > 900  # the last 100 episodes: greedy 1000, but for 5% random actions
    assert evaluate_checkpoint(tmp_path / "run", episodes=3, epsilon=0.0)["returns"] == [1000.0] * 3


@pytest.mark.parametrize("q_function", ["table", "mlp"])
def test_q_learning_resume_gives_the_same_scalars_and_table(tmp_path, stop_and_resume, q_function):
    overrides = ("algo=q_learning", "env=recycling", f"algo.q_function={q_function}", "algo.gamma=0.9",
                 "algo.num_envs=2", "total_timesteps=1000", "checkpoint.interval=100000", "logging.log_interval=50") + (("env.kwargs.one_hot=true", "algo.learning_rate=0.01") if q_function == "mlp" else ())
    whole, split, _ = stop_and_resume(overrides, 400)
    assert whole.keys() == split.keys() and len(whole["losses/td_error"]) == 20
    for tag in whole:
        assert split[tag] == whole[tag], tag
    assert (tmp_path / "split" / "q_table.csv").read_text() == (tmp_path / "whole" / "q_table.csv").read_text()


# ---- bad input --------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, key, allowed", [
    (["algo=q_learning", "env=random_walk"], "env", "an env with discrete states"),
    (["algo=value_iteration", "env=random_walk"], "env", "an env with discrete states"),
    (["algo=value_iteration", "env=cartpole"], "env", "an env with discrete states"),
    (["algo=q_learning", "env=breakout"], "env", "an env with discrete states"),
    (["algo=q_learning", "env=recycling", "env.kwargs.one_hot=true"], "env", "an env with discrete states"),
    (["algo=q_learning", "env=recycling", "algo.q_function=mlp"], "env", "vector observations"),
    (["algo=q_learning", "env=gym", "env.id=Pendulum-v1", "algo.q_function=mlp"], "env", "discrete actions"),
    (["algo=q_learning", "env=recycling", "algo.gamma=1.5"], "algo.gamma", "<= 1"),
    (["algo=value_iteration", "env=recycling", "algo.gamma=-0.1"], "algo.gamma", ">= 0"),
    (["algo=value_iteration", "env=recycling", "algo.gamma=1"], "algo.gamma", "a discount below 1"),
    (["algo=q_learning", "env=trap", "algo.initial_q=[0.5,0.4]"], "algo.initial_q",
     "a list of 3 numbers (one per action) or 1 lists of 3 numbers"),
    (["algo=q_learning", "env=trap", "algo.initial_q=[a,b,c]"], "algo.initial_q", "a number"),
    (["algo=q_learning", "env=recycling", "env.kwargs.one_hot=true", "algo.q_function=mlp", "algo.initial_q=1"],
     "algo.initial_q", "0 for algo.q_function=mlp"),
    (["algo=q_learning", "env=trap", "algo.learning_rate=1.5"], "algo.learning_rate", "<= 1"),
    (["algo=q_learning", "env=trap", "algo.start_e=0.1", "algo.end_e=0.2"], "algo.end_e", "at most algo.start_e"),
    (["algo=q_learning", "env=trap", "algo.q_function=linear"], "algo.q_function", "table, mlp"),
    (["algo=value_iteration", "env=recycling", "env.max_episode_steps=50", "algo.max_iterations=10"],
     "env.max_episode_steps", "at most algo.max_iterations=10"),
    (["algo=value_iteration", "env=recycling", "algo.tolerance=0"], "algo.tolerance", "> 0"),
])
def test_bad_tabular_values_give_one_clear_error(make_cfg, overrides, key, allowed):
    with pytest.raises(ConfigError) as info:
        validate(make_cfg(*overrides))
    message = str(info.value)
    assert message.startswith(f"{key}=") and allowed in message and "\n" not in message, message


@pytest.mark.parametrize("algo", ["value_iteration", "q_learning"])
def test_chain_that_never_ends_is_refused_before_the_run_directory_exists(make_cfg, tmp_path, algo):
    cfg = make_cfg(f"algo={algo}", "env=recycling", "env.kwargs.terminal_states=[]")
    with pytest.raises(ConfigError, match=r"^env.max_episode_steps=None is not allowed: expected a step limit"):
        run_training(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
