"""rlrun.rlhf.social_choice: Bradley-Terry preference matrices, transitivity, Condorcet / Copeland / Borda winners."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlrun.rlhf.preferences import bradley_terry_probability
from rlrun.rlhf.social_choice import (borda_scores, borda_winners, bradley_terry_matrix, bradley_terry_reward_gap, check_preference_matrix, condorcet_winner, copeland_scores, copeland_winners, transitive_probability)

# no Condorcet winner (0 > 1 > 3 > 0), Copeland tie {0, 1} with 2 wins each, Borda winner 3 (1.8) with 1 win
CYCLE_4 = np.array([[0.5, 0.6, 0.6, 0.1],
                    [0.4, 0.5, 0.6, 0.55],
                    [0.4, 0.4, 0.5, 0.55],
                    [0.9, 0.45, 0.45, 0.5]])


# ---- Bradley-Terry values by hand ------------------------------------------------------------

def test_equal_rewards_give_one_half_exactly_and_a_gap_of_ln3_gives_three_quarters():
    assert float(bradley_terry_probability(20.0, 20.0)) == 0.5  # the lecture's pizza, both +20
    assert float(bradley_terry_probability(math.log(3.0), 0.0)) == pytest.approx(0.75, abs=1e-15)
    assert float(bradley_terry_probability(0.0, math.log(3.0))) == pytest.approx(0.25, abs=1e-15)
    # 100 vs 10: 1 - exp(-90), not the lecture's "0.9 or 0.95"
    assert float(bradley_terry_probability(10.0, 100.0)) == pytest.approx(math.exp(-90.0), rel=1e-12)


def test_the_random_answer_option_keeps_ties_at_one_half_and_caps_certainty_at_0_95():
    eps = 0.1  # Christiano et al. 2017
    assert float(bradley_terry_probability(20.0, 20.0, eps)) == 0.5
    assert float(bradley_terry_probability(100.0, 10.0, eps)) == pytest.approx(0.95, abs=1e-15)
    assert float(bradley_terry_probability(10.0, 100.0, eps)) == pytest.approx(0.05, abs=1e-15)
    assert float(bradley_terry_probability(math.log(3.0), 0.0, eps)) == pytest.approx(0.9 * 0.75 + 0.05, abs=1e-15)


def test_bradley_terry_matrix_holds_the_pairwise_probabilities():
    P = bradley_terry_matrix([0.0, math.log(3.0), math.log(3.0)])
    assert P.shape == (3, 3) and P.dtype == np.float64
    np.testing.assert_allclose(P, [[0.5, 0.25, 0.25], [0.75, 0.5, 0.5], [0.75, 0.5, 0.5]], atol=1e-15)
    noisy = bradley_terry_matrix([100.0, 10.0], random_answer_prob=0.1)
    np.testing.assert_allclose(noisy, [[0.5, 0.95], [0.05, 0.5]], atol=1e-15)
    check_preference_matrix(bradley_terry_matrix(np.random.default_rng(0).normal(0.0, 5.0, 20)))


@pytest.mark.parametrize("p, gap", [(0.5, 0.0), (0.75, math.log(3.0)), (0.9, math.log(9.0)), (0.95, math.log(19.0))])
def test_reward_gap_is_the_inverse_of_the_bradley_terry_probability(p, gap):
    assert bradley_terry_reward_gap(p) == pytest.approx(gap, abs=1e-12)
    assert float(bradley_terry_probability(bradley_terry_reward_gap(p), 0.0)) == pytest.approx(p, abs=1e-12)


@pytest.mark.parametrize("p", [0.0, 1.0, -0.1, float("nan")])
def test_reward_gap_refuses_certainty(p):
    with pytest.raises(ValueError, match="expected a number in \\(0, 1\\)"):
        bradley_terry_reward_gap(p)


# ---- transitivity ---------------------------------------------------------------------------------

def test_odds_multiply_by_hand():
    assert float(transitive_probability(0.75, 2.0 / 3.0)) == pytest.approx(6.0 / 7.0, abs=1e-15)  # 3:1, 2:1 -> 6:1
    assert float(transitive_probability(0.5, 0.8)) == pytest.approx(0.8, abs=1e-15)  # an even pair changes nothing


def test_bradley_terry_probabilities_follow_from_a_chain_of_two():
    rewards = np.random.default_rng(1).uniform(-3.0, 3.0, size=(1000, 3))  # P in [0.0025, 0.9975]
    i, j, k = rewards.T
    deduced = transitive_probability(bradley_terry_probability(i, j).numpy(), bradley_terry_probability(j, k).numpy())
    assert np.abs(deduced - bradley_terry_probability(i, k).numpy()).max() < 1e-12


def test_random_answers_break_the_odds_identity():
    eps = 0.1
    p_ij, p_jk, p_ik = (float(bradley_terry_probability(a, b, eps)) for a, b in ((2.0, 0.0), (0.0, -2.0), (2.0, -2.0)))
    assert float(transitive_probability(p_ij, p_jk)) - p_ik == pytest.approx(0.0325, abs=1e-3)


# ---- winners on hand-made matrices ----------------------------------------------------------------

def test_a_three_cycle_has_no_condorcet_winner_and_everyone_ties_on_copeland():
    P = [[0.5, 0.6, 0.3], [0.4, 0.5, 0.65], [0.7, 0.35, 0.5]]  # 0 > 1 > 2 > 0
    assert condorcet_winner(P) is None
    assert copeland_scores(P).tolist() == [1, 1, 1] and copeland_winners(P) == [0, 1, 2]
    scores = borda_scores(P)
    np.testing.assert_allclose(scores, [0.9, 1.05, 1.05], atol=1e-15)
    assert scores[1] != scores[2] and borda_winners(P) == [1, 2]  # 0.4 + 0.65 = 0.7 + 0.35 up to rounding: a tie


def test_the_condorcet_winner_is_the_copeland_winner_but_need_not_be_the_borda_winner():
    P = [[0.5, 0.55, 0.51], [0.45, 0.5, 0.99], [0.49, 0.01, 0.5]]  # 0 barely beats both, 1 crushes 2
    assert condorcet_winner(P) == 0
    assert copeland_scores(P).tolist() == [2, 1, 0] and copeland_winners(P) == [0]
    np.testing.assert_allclose(borda_scores(P), [1.06, 1.44, 0.5], atol=1e-15)
    assert borda_winners(P) == [1]


def test_a_four_arm_cycle_copeland_tie_and_a_different_borda_winner():
    assert condorcet_winner(CYCLE_4) is None
    assert copeland_scores(CYCLE_4).tolist() == [2, 2, 1, 1] and copeland_winners(CYCLE_4) == [0, 1]
    np.testing.assert_allclose(borda_scores(CYCLE_4), [1.3, 1.55, 1.35, 1.8], atol=1e-15)
    assert borda_winners(CYCLE_4) == [3]


def test_even_pairs_are_no_victories():
    P = np.full((2, 2), 0.5)
    assert condorcet_winner(P) is None
    assert copeland_winners(P) == [0, 1] and copeland_scores(P).tolist() == [0, 0]
    assert borda_winners(P) == [0, 1]
    assert condorcet_winner([[0.5]]) == 0 and copeland_winners([[0.5]]) == [0] and borda_winners([[0.5]]) == [0]


def test_the_diagonal_is_never_read():
    P = CYCLE_4.copy()
    np.fill_diagonal(P, [1.0, 0.0, 1.0, 0.0])
    assert copeland_winners(P) == [0, 1] and borda_winners(P) == [3]
    np.testing.assert_allclose(borda_scores(P), borda_scores(CYCLE_4), atol=1e-15)


def test_under_bradley_terry_the_arm_of_largest_reward_wins_every_way():
    rng = np.random.default_rng(2)
    for _ in range(20):
        rewards = rng.normal(0.0, 3.0, size=6)
        P = bradley_terry_matrix(rewards)
        best = int(np.argmax(rewards))
        assert condorcet_winner(P) == best and copeland_winners(P) == [best] and borda_winners(P) == [best]
        assert copeland_scores(P).tolist() == np.argsort(np.argsort(rewards)).tolist()  # rank = number of wins
        assert borda_scores(P).sum() == pytest.approx(6 * 5 / 2, abs=1e-12)


# ---- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("P, message", [
    ([[0.5, 0.6, 0.4], [0.4, 0.5, 0.5]], r"shape \(2, 3\): expected \(K, K\) with K >= 1"),
    (np.zeros((0, 0)), r"shape \(0, 0\)"),
    ([[0.5, 1.2], [-0.2, 0.5]], r"P\[0, 1\] = 1.2 is not allowed: expected a probability in \[0, 1\]"),
    ([[0.5, float("nan")], [0.5, 0.5]], r"P\[0, 1\] = nan is not allowed"),
    ([[0.5, 0.6, 0.3], [0.4, 0.5, 0.5], [0.6, 0.5, 0.5]],
     r"P\[0, 2\] = 0.3 and P\[2, 0\] = 0.6 sum to 0.9: expected P\[i, j\] \+ P\[j, i\] = 1 within 1e-09"),
    ([["a", "b"], ["c", "d"]], "not a matrix of numbers"),
])
def test_an_invalid_matrix_is_refused_naming_the_entry(P, message):
    with pytest.raises(ValueError, match=message):
        check_preference_matrix(P)
    for winners in (condorcet_winner, copeland_winners, borda_winners):
        with pytest.raises(ValueError, match=message):
            winners(P)


def test_rounding_within_the_tolerance_is_accepted():
    P = np.array([[0.5, 0.7 + 1e-12], [0.3, 0.5]])
    assert copeland_winners(P) == [0]


@pytest.mark.parametrize("rewards, eps, message", [
    ([], 0.0, "non-empty 1-D array"), ([[1.0, 2.0]], 0.0, "non-empty 1-D array"),
    ([1.0, float("inf")], 0.0, "finite"), ([1.0, 2.0], 1.0, r"random_answer_prob=1.0 .* \[0, 1\)"),
])
def test_bradley_terry_matrix_refuses_bad_rewards(rewards, eps, message):
    with pytest.raises(ValueError, match=message):
        bradley_terry_matrix(rewards, eps)
