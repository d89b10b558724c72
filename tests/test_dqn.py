"""DQN pieces against hand computations: TD target, Double DQN, epsilon schedule, event counting."""

from __future__ import annotations

import pytest
import torch

from rlrun.algos.dqn import linear_schedule, multiples_in, td_target


def test_td_target_does_not_bootstrap_through_termination_but_does_through_truncation():
    rewards = torch.tensor([1.0, 1.0, 0.0])
    terminated = torch.tensor([1.0, 0.0, 0.0])  # row 1: a truncated step (terminated = 0)
    next_q = torch.tensor([[5.0, 7.0], [2.0, 3.0], [-1.0, -4.0]])
    y = td_target(rewards, terminated, 0.9, next_q)
    torch.testing.assert_close(y, torch.tensor([1.0, 1.0 + 0.9 * 3.0, 0.9 * -1.0]))


def test_double_dqn_evaluates_the_online_argmax_with_the_target_network():
    rewards = torch.zeros(2)
    terminated = torch.zeros(2)
    next_q_target = torch.tensor([[10.0, 1.0, 0.0], [0.0, 2.0, 8.0]])
    next_q_online = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 0.0]])  # argmax 1 and 0
    y = td_target(rewards, terminated, 0.5, next_q_target, next_q_online)
    torch.testing.assert_close(y, torch.tensor([0.5 * 1.0, 0.5 * 0.0]))
    y_dqn = td_target(rewards, terminated, 0.5, next_q_target)
    torch.testing.assert_close(y_dqn, torch.tensor([5.0, 4.0]))


def test_linear_epsilon_schedule():
    assert linear_schedule(1.0, 0.01, 1000, 0) == 1.0
    assert linear_schedule(1.0, 0.01, 1000, 500) == pytest.approx(0.505)
    assert linear_schedule(1.0, 0.01, 1000, 1000) == pytest.approx(0.01)
    assert linear_schedule(1.0, 0.01, 1000, 5000) == 0.01
    assert linear_schedule(1.0, 0.05, 0, 0) == 0.05


def test_multiples_in_counts_events_due_in_one_iteration():
    assert multiples_in(0, 1, 4) == 1 and multiples_in(1, 1, 4) == 0 and multiples_in(4, 1, 4) == 1
    assert sum(multiples_in(s, 1, 4) for s in range(100)) == 25  # one env: every 4th step
    assert sum(multiples_in(s, 8, 4) for s in range(0, 800, 8)) == 200  # 8 envs: two per iteration
