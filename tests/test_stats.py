"""rlrun.core.stats against hand-computed values and against numbers recorded once from rliable 1.2.0
(``library.get_interval_estimates`` with ``np.random.seed(0)``, 50,000 resamples unless stated) on the
fixture below. rliable is no dependency of rlrun; these literals are its answers, so the test keeps comparing
with it after it is gone."""

import numpy as np
import pytest

from rlrun.core import stats

# rng = np.random.default_rng(7); X = rng.normal(1, 0.5, (5, 3)); Y = rng.normal(0.8, 0.5, (5, 3))
X = np.array([[1.00061508, 1.14937277, 0.86293107],
              [0.55470408, 0.77266461, 0.50417672],
              [1.0300718, 1.67010762, 0.75389674],
              [0.68976255, 1.24492103, 1.1784435],
              [1.05270712, 0.53476598, 0.98537409]])
Y = np.array([[1.1476516, 0.12789273, 0.57119212],
              [-0.15061137, 0.15523113, -0.12086752],
              [0.68245443, 0.16627676, 0.93563218],
              [0.87837554, 0.70653453, -0.45837986],
              [0.53065355, 0.77574953, 0.85665449]])
MC = 0.01  # tolerance of a 95% bound between two independent 50,000-resample bootstraps on this fixture


def test_iqm_by_hand():
    # 8 scores: the middle 50% are 3, 4, 5, 6
    assert stats.iqm(np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 100.0]])) == pytest.approx(4.5)
    # a single value
    assert stats.iqm(np.array([[2.5]])) == pytest.approx(2.5)


def test_iqm_interval_equals_rliable():
    point, low, high = stats.stratified_bootstrap_ci(X, stats.iqm_statistic)
    assert point[0] == pytest.approx(0.9219328700607115, abs=1e-7)  # rliable metrics.aggregate_iqm(X)
    assert low[0] == pytest.approx(0.74392471, abs=MC)
    assert high[0] == pytest.approx(1.06720658, abs=MC)


def test_mean_curve_interval_equals_rliable():
    # (4 runs, 1 task, 6 bins); rliable's lambda s: s.mean(axis=(0, 1))
    curve = np.array([[[0.0, 1.0, 0.0, 2.0, 1.0, -1.0]], [[-2.0, 0.5, 1.0, -1.0, 0.5, 0.0]],
                      [[-1.0, -1.0, 2.0, 0.0, 0.0, 0.5]], [[0.5, 2.0, -1.0, -1.5, 0.5, 0.0]]])
    point, low, high = stats.stratified_bootstrap_ci(curve, stats.mean_statistic)
    np.testing.assert_allclose(point, [-0.625, 0.625, 0.5, -0.125, 0.5, -0.125])
    # with 4 runs the bootstrap means take few values: the bounds are a resample's mean, and rliable's were
    np.testing.assert_allclose(low, [-1.5, -0.5, -0.5, -1.25, 0.125, -0.75], atol=MC)
    np.testing.assert_allclose(high, [0.25, 1.625, 1.5, 1.25, 0.875, 0.375], atol=MC)


def test_one_run_has_a_point_interval():
    point, low, high = stats.stratified_bootstrap_ci(X[:1], stats.iqm_statistic)
    assert low[0] == high[0] == point[0] == pytest.approx(np.mean(np.sort(X[0])[0:3]))  # 3 scores: their mean


def test_bad_shapes():
    with pytest.raises(ValueError, match="num_runs"):
        stats.stratified_bootstrap_ci(np.ones(3), stats.iqm_statistic)
    with pytest.raises(ValueError, match="same tasks"):
        stats.probability_of_improvement(X, Y[:, :2])


def test_performance_profile_equals_rliable():
    taus = np.array([0.5, 1.0, 1.5])
    # by hand: all 15 scores exceed 0.5; 7 of 15 exceed 1.0; 1 of 15 (1.670) exceeds 1.5
    np.testing.assert_allclose(stats.performance_profile(X, taus), [1.0, 7 / 15, 1 / 15])
    # rliable create_performance_profile({'x': X}, taus, reps=2000): lower [1, 0.2667, 0], upper [1, 0.6667, 0.2]
    _, low, high = stats.stratified_bootstrap_ci(X, stats.profile_statistic(taus), reps=2000)
    np.testing.assert_allclose(low, [1.0, 4 / 15, 0.0], atol=1e-9)
    np.testing.assert_allclose(high, [1.0, 10 / 15, 3 / 15], atol=1e-9)


def test_probability_of_improvement_equals_rliable():
    # by hand on one task: X = [1, 3], Y = [2, 2]: pairs (1,2) lose, (3,2) win -> 0.5; with a tie 3 vs 3 it counts 1/2
    assert stats.probability_of_improvement(np.array([[1.0], [3.0]]), np.array([[2.0], [2.0]])) == 0.5
    assert stats.probability_of_improvement(np.array([[3.0]]), np.array([[3.0], [1.0]])) == 0.75
    point, low, high = stats.probability_of_improvement_ci(X, Y)
    assert point == pytest.approx(0.7733333333333334, abs=1e-12)  # rliable metrics.probability_of_improvement
    assert low == pytest.approx(0.58666667, abs=MC)
    assert high == pytest.approx(0.93333333, abs=MC)


def test_same_seed_same_interval_and_caller_stream_untouched():
    np.random.seed(123)
    before = np.random.random()
    np.random.seed(123)
    a = stats.stratified_bootstrap_ci(X, stats.iqm_statistic, reps=1000, seed=3)
    b = stats.stratified_bootstrap_ci(X, stats.iqm_statistic, reps=1000, seed=3)
    assert np.random.random() == before
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
