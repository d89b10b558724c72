"""Aggregate statistics of few-run RL results (Agarwal et al. 2021, "Deep Reinforcement Learning at the Edge of
the Statistical Precipice", NeurIPS), on SciPy: the interquartile mean, stratified-bootstrap confidence
intervals, performance profiles and the probability of improvement.

Scores are arrays of shape (num_runs, num_tasks): one row per run (seed), one column per task (env). The
stratified bootstrap resamples the runs of each task independently, with replacement: exactly what
``scipy.stats.bootstrap`` does when it is given one sample per task. Intervals are percentile intervals, as
in rliable (whose numbers these equal up to the bootstrap's Monte-Carlo error; tests/test_stats.py).

SciPy is imported where it is used: ``scipy.stats`` takes about 0.6 s to import, which ``rlrun-plot --help``
need not pay.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

CONFIDENCE = 0.95  # two-sided confidence of the intervals
REPS = 50_000      # bootstrap resamples (rliable's default)


def iqm(scores: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """The interquartile mean: the mean of the middle 50% of all scores (25% trimmed from each end,
    ``scipy.stats.trim_mean``). ``axis=None`` pools every run and task."""
    from scipy import stats

    return stats.trim_mean(scores, 0.25, axis=axis)


def stratified_bootstrap_ci(scores: np.ndarray, statistic: Callable[[np.ndarray], np.ndarray], reps: int = REPS,
                            seed: int = 0, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray,
                                                                                     np.ndarray]:
    """A statistic of (num_runs, num_tasks, ...) scores with its stratified-bootstrap percentile interval.

    The runs of each task are resampled with replacement, independently of the other tasks
    (``scipy.stats.bootstrap`` with one sample per task), ``reps`` times, in batches of 2,000 resamples.

    Args:
        scores: (R, T, ...) float64 (trailing axes, e.g. the bins of a learning curve, travel with each run);
            R may be 1 (the interval is then the point).
        statistic: vectorized over a leading resample axis: ``statistic(s)`` of an (n, R, T, ...) array ->
            (n, K) values. :func:`iqm_statistic` and :func:`mean_statistic` are two such.
        reps: bootstrap resamples.
        seed: seed of the resampling (NumPy's default_rng).
        confidence: two-sided confidence level.

    Returns:
        (point, low, high): (K,) float64 each.

    Raises:
        ValueError: for scores with fewer than 2 axes or no run.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim < 2 or scores.shape[0] == 0:
        raise ValueError(f"scores must have shape (num_runs >= 1, num_tasks, ...), got {scores.shape}")
    point = np.asarray(statistic(scores[None]), dtype=np.float64)[0]
    if scores.shape[0] == 1:
        return point, point.copy(), point.copy()
    extra = scores.ndim - 2  # trailing axes

    def batched(*tasks: np.ndarray, axis: int = -1) -> np.ndarray:
        # scipy hands each task's resampled runs as (..., n, R), trailing axes first; make (n, R, T, ...)
        stacked = np.stack(tasks, axis=-1)  # (..., n, R, T)
        stacked = np.moveaxis(stacked, list(range(extra)), list(range(3, 3 + extra)))
        return np.asarray(statistic(stacked), dtype=np.float64).T  # (K, n)

    from scipy import stats

    result = stats.bootstrap(tuple(scores[:, j] for j in range(scores.shape[1])), batched, n_resamples=reps,
                             confidence_level=confidence, method="percentile", vectorized=True, axis=0, batch=2000,
                             rng=np.random.default_rng(seed))
    low, high = result.confidence_interval.low, result.confidence_interval.high
    return point, np.atleast_1d(np.asarray(low, dtype=np.float64)), np.atleast_1d(np.asarray(high, dtype=np.float64))


def iqm_statistic(resamples: np.ndarray) -> np.ndarray:
    """The IQM of every run and task of each resample: (n, R, T) -> (n, 1), for :func:`stratified_bootstrap_ci`."""
    return iqm(resamples.reshape(resamples.shape[0], -1), axis=1)[:, None]


def mean_statistic(resamples: np.ndarray) -> np.ndarray:
    """The mean over runs and tasks, per trailing index: (n, R, T, ...) -> (n, prod(...)), for
    :func:`stratified_bootstrap_ci` (e.g. the mean learning curve over (R, 1, bins) scores)."""
    return resamples.mean(axis=(1, 2)).reshape(resamples.shape[0], -1)


def profile_statistic(taus: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The performance profile at (K,) thresholds as a :func:`stratified_bootstrap_ci` statistic:
    (n, R, T) -> (n, K), the fraction of each resample's scores above each tau."""
    taus = np.asarray(taus, dtype=np.float64)
    return lambda s: (s[:, None, :, :] > taus[None, :, None, None]).mean(axis=(2, 3))


def performance_profile(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """The run-score distribution: for each threshold tau, the fraction of runs scoring above tau, averaged
    over tasks (Agarwal et al. 2021, section 4.2).

    Args:
        scores: (R, T) float64.
        taus: (K,) thresholds.

    Returns:
        (K,) float64 in [0, 1], non-increasing in tau.
    """
    scores = np.asarray(scores, dtype=np.float64)
    return (scores[None, :, :] > np.asarray(taus, dtype=np.float64)[:, None, None]).mean(axis=(1, 2))


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y): the probability that a run of algorithm X scores above a run of Y on a task, averaged over
    tasks, ties counting one half (the Mann-Whitney U statistic over n m pairs; Agarwal et al. 2021, 4.3).

    Args:
        x: (N, T) scores of X; y: (M, T) scores of Y, the same tasks in the same columns.

    Raises:
        ValueError: if the task counts differ.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x has {x.shape[1]} tasks and y {y.shape[1]}: expected the same tasks")
    wins = (x[:, None, :] > y[None, :, :]) + 0.5 * (x[:, None, :] == y[None, :, :])  # (N, M, T)
    return float(wins.mean(axis=(0, 1)).mean())


def probability_of_improvement_ci(x: np.ndarray, y: np.ndarray, reps: int = REPS, seed: int = 0,
                                  confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """:func:`probability_of_improvement` with its stratified-bootstrap percentile interval: the runs of X and
    of Y are resampled independently within each task. Returns (point, low, high)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    tasks = x.shape[1]
    point = probability_of_improvement(x, y)

    def batched(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        xs, ys = np.stack(samples[:tasks], axis=-1), np.stack(samples[tasks:], axis=-1)  # (..., N, T), (..., M, T)
        wins = (xs[..., :, None, :] > ys[..., None, :, :]) + 0.5 * (xs[..., :, None, :] == ys[..., None, :, :])
        return wins.mean(axis=(-3, -2)).mean(axis=-1)

    from scipy import stats

    result = stats.bootstrap((*x.T, *y.T), batched, n_resamples=reps, confidence_level=confidence,
                             method="percentile", vectorized=True, axis=-1, rng=np.random.default_rng(seed))
    return point, float(result.confidence_interval.low), float(result.confidence_interval.high)
