"""Which of K arms is best, given how often each beats each other: Condorcet, Copeland and Borda winners.

A preference matrix P over K arms (items, actions, responses) holds P[i, j], the probability that
arm i is preferred to arm j in one comparison, with P[i, j] + P[j, i] = 1 for i != j (a tie counts
half for each). The diagonal is never read. The dueling-bandit literature (Yue et al. 2012, "The
K-armed dueling bandits problem", JCSS 78:1538; Zoghi et al. 2015, "Copeland dueling bandits",
NeurIPS; Jamieson et al. 2015, "Sparse dueling bandits", AISTATS) asks for one of three winners:

* Condorcet winner: beats every other arm, P[i, j] > 1/2 for all j != i. At most one exists, and
  a cycle (a beats b beats c beats a) can leave none.
* Copeland winner: the most pairwise victories, copeland_score(i) = #{j != i: P[i, j] > 1/2}.
  Always exists; several arms may tie.
* Borda winner: the highest Borda score sum_{j != i} P[i, j], the expected score of arm i against
  each other arm when a win scores 1, a tie 1/2 and a loss 0 (Jamieson et al. divide it by K - 1,
  which changes no winner). Always exists; several arms may tie.

A Condorcet winner is always the unique Copeland winner; the Borda winner can differ from both.
Under the Bradley-Terry model (Bradley and Terry 1952), P[i, j] = exp(r_i) / (exp(r_i) + exp(r_j)),
all three agree: the arm of largest reward, when only one arm has it, beats every other one. The
model is also transitive in the sense of the RLHF lecture (seeds/001): its odds multiply,
odds(i, k) = odds(i, j) * odds(j, k) with odds(i, j) = P[i, j] / P[j, i] = exp(r_i - r_j), so
P(i > k) follows from P(i > j) and P(j > k).
"""

from __future__ import annotations

import math

import numpy as np

from rlrun.rlhf.preferences import bradley_terry_probability

COMPLEMENT_TOLERANCE = 1e-9  # how far P[i, j] + P[j, i] may be from 1 (rounding of computed probabilities)
SCORE_TIE_TOLERANCE = 1e-9  # Borda scores this close to the best one tie with it (sums of rounded floats)
EVEN = 0.5  # P[i, j] above this: arm i beats arm j; exactly this: neither beats the other


def check_preference_matrix(P: np.ndarray) -> np.ndarray:
    """Validate a preference matrix and return it as a (K, K) float64 array.

    Args:
        P: array-like (K, K), K >= 1; P[i, j] is the probability that arm i is preferred to arm j.

    Returns:
        (K, K) float64 copy of P.

    Raises:
        ValueError: naming the first offending entry, if P is not a non-empty square matrix, an entry
            is not a number in [0, 1] (nan included), or P[i, j] + P[j, i] differs from 1 by more than
            COMPLEMENT_TOLERANCE for some i != j. The diagonal only needs to lie in [0, 1].
    """
    try:
        P = np.array(P, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"preference matrix is not a matrix of numbers: {exc}") from None
    if P.ndim != 2 or P.shape[0] != P.shape[1] or P.shape[0] == 0:
        raise ValueError(f"preference matrix has shape {P.shape}: expected (K, K) with K >= 1 arms")
    outside = np.argwhere(~((P >= 0.0) & (P <= 1.0)))  # written so that nan counts as outside
    if len(outside):
        i, j = outside[0]
        raise ValueError(f"preference matrix entry P[{i}, {j}] = {float(P[i, j])!r} is not allowed: expected a "
                         "probability in [0, 1]")
    gap = np.abs(P + P.T - 1.0)
    np.fill_diagonal(gap, 0.0)
    broken = np.argwhere(gap > COMPLEMENT_TOLERANCE)
    if len(broken):
        i, j = broken[0]
        raise ValueError(f"preference matrix entries P[{i}, {j}] = {float(P[i, j])!r} and P[{j}, {i}] = "
                         f"{float(P[j, i])!r} sum to {P[i, j] + P[j, i]:.12g}: expected P[i, j] + P[j, i] = 1 "
                         f"within {COMPLEMENT_TOLERANCE:g} (every comparison of i with j has one winner; a tie "
                         "counts half for each)")
    return P


def bradley_terry_matrix(rewards: np.ndarray, random_answer_prob: float = 0.0) -> np.ndarray:
    """The preference matrix of the Bradley-Terry model over K arms of known reward.

    P[i, j] = (1 - eps) * exp(r_i) / (exp(r_i) + exp(r_j)) + eps / 2 (Bradley and Terry 1952; eps is
    the chance of a random answer of Christiano et al. 2017), computed by
    ``rlrun.rlhf.preferences.bradley_terry_probability``. Equal rewards give exactly 0.5, the diagonal too.

    Args:
        rewards: (K,) real latent rewards r, K >= 1.
        random_answer_prob: eps in [0, 1).

    Returns:
        (K, K) float64 preference matrix.

    Raises:
        ValueError: if rewards is not a non-empty 1-D array of finite numbers, or eps is not in [0, 1).
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.ndim != 1 or len(rewards) == 0 or not np.all(np.isfinite(rewards)):
        raise ValueError(f"rewards {rewards!r}: expected a non-empty 1-D array of finite numbers")
    if not 0.0 <= random_answer_prob < 1.0:
        raise ValueError(f"random_answer_prob={random_answer_prob!r} is not allowed: expected a number in [0, 1)")
    return bradley_terry_probability(rewards[:, None], rewards[None, :], random_answer_prob).numpy()


def bradley_terry_reward_gap(probability: float) -> float:
    """The reward gap r_i - r_j at which the Bradley-Terry model prefers i to j with ``probability``.

    The inverse of P = sigmoid(r_i - r_j): the log-odds ln(P / (1 - P)); 0.9 needs ln 9 = 2.197,
    0.95 needs ln 19 = 2.944.

    Raises:
        ValueError: if probability is not in (0, 1).
    """
    if not 0.0 < probability < 1.0:
        raise ValueError(f"probability={probability!r} is not allowed: expected a number in (0, 1)")
    return math.log(probability / (1.0 - probability))


def transitive_probability(p_ij: np.ndarray | float, p_jk: np.ndarray | float) -> np.ndarray:
    """P(i > k) deduced from P(i > j) and P(j > k) under the Bradley-Terry model.

    The odds multiply, odds(i, k) = odds(i, j) * odds(j, k), since odds(i, j) = exp(r_i - r_j); solved
    for the probability: P(i > k) = p_ij p_jk / (p_ij p_jk + (1 - p_ij)(1 - p_jk)). A float64 p close
    to 1 holds 1 - p only to a relative precision of about 1.1e-16 / (1 - p), and the deduced value
    inherits that error (measured: below 1e-14 for p in [0.0025, 0.9975], 5e-13 in [4.5e-5,
    1 - 4.5e-5]). The identity does not hold outside Bradley-Terry, e.g. with random answers (eps > 0).

    Args:
        p_ij, p_jk: probabilities in [0, 1], floats or arrays of one shape (not both 0 and 1 at once).

    Returns:
        float64 array of their shape.
    """
    p_ij, p_jk = np.asarray(p_ij, dtype=np.float64), np.asarray(p_jk, dtype=np.float64)
    both = p_ij * p_jk
    return both / (both + (1.0 - p_ij) * (1.0 - p_jk))


def copeland_scores(P: np.ndarray) -> np.ndarray:
    """(K,) int64 number of pairwise victories of each arm, #{j != i: P[i, j] > 0.5} (Zoghi et al. 2015).

    Raises:
        ValueError: if P is not a valid preference matrix (see ``check_preference_matrix``).
    """
    P = check_preference_matrix(P)
    wins = P > EVEN
    np.fill_diagonal(wins, False)
    return wins.sum(axis=1).astype(np.int64)


def borda_scores(P: np.ndarray) -> np.ndarray:
    """(K,) float64 Borda score of each arm, sum_{j != i} P[i, j] (expected wins; a tie counts 1/2).

    The scores add up to K (K - 1) / 2, the number of pairs.

    Raises:
        ValueError: if P is not a valid preference matrix (see ``check_preference_matrix``).
    """
    P = check_preference_matrix(P)
    return P.sum(axis=1) - np.diag(P)


def condorcet_winner(P: np.ndarray) -> int | None:
    """The arm that beats every other arm (P[i, j] > 0.5 for all j != i), or None if there is none.

    Raises:
        ValueError: if P is not a valid preference matrix (see ``check_preference_matrix``).
    """
    scores = copeland_scores(P)
    winners = np.flatnonzero(scores == len(scores) - 1)
    return int(winners[0]) if len(winners) else None  # two arms cannot both beat each other


def copeland_winners(P: np.ndarray) -> list[int]:
    """The arms with the most pairwise victories, in increasing order (ties: all of them).

    Raises:
        ValueError: if P is not a valid preference matrix (see ``check_preference_matrix``).
    """
    scores = copeland_scores(P)
    return [int(i) for i in np.flatnonzero(scores == scores.max())]


def borda_winners(P: np.ndarray) -> list[int]:
    """The arms of highest Borda score, in increasing order (ties within SCORE_TIE_TOLERANCE: all of them).

    Raises:
        ValueError: if P is not a valid preference matrix (see ``check_preference_matrix``).
    """
    scores = borda_scores(P)
    return [int(i) for i in np.flatnonzero(scores >= scores.max() - SCORE_TIE_TOLERANCE)]
