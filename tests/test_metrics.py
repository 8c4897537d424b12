import numpy as np
import pytest
from scipy import stats

from training.metrics import iqa_metrics, paired_difference, within_group_srcc


def test_perfect_and_inverted():
    x = np.linspace(0, 100, 20)
    m = iqa_metrics(x, x)
    assert m["srcc"] == pytest.approx(1) and m["plcc"] == pytest.approx(1) and m["rmse"] == pytest.approx(0)
    assert iqa_metrics(x, -x)["srcc"] == pytest.approx(-1)


def test_logistic_fit_linearises_a_monotone_nonlinearity():
    rng = np.random.default_rng(0)
    pred = rng.uniform(0, 100, 200)
    target = 100 / (1 + np.exp(-(pred - 50) / 12)) + rng.normal(0, 1.0, 200)  # a saturating monotone map
    m = iqa_metrics(pred, target)
    assert m["srcc"] == pytest.approx(stats.spearmanr(pred, target)[0])
    assert m["krcc"] == pytest.approx(stats.kendalltau(pred, target)[0])
    assert m["plcc"] < 0.985 and m["plcc_logistic"] > 0.995
    assert m["rmse_logistic"] < 2 < m["rmse"]


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        iqa_metrics([1, 2], [1, 2])
    with pytest.raises(ValueError):
        iqa_metrics([1, 2, 3], [1, 2])


def test_within_group_srcc_ignores_per_group_offsets():
    # Three "photos", each with 5 levels ordered perfectly, but with offsets that scramble the pool.
    target = np.tile(np.arange(5.0), 3) * 10
    pred = np.concatenate([np.arange(5.0) + off for off in (100.0, 0.0, 50.0)])
    pred[10:] = pred[10:][::-1]          # ... except the third photo, ranked backwards
    groups = np.repeat(["a", "b", "c"], 5)
    w = within_group_srcc(pred, target, groups)
    assert w["groups"] == 3 and w["median"] == pytest.approx(1.0) and w["min"] == pytest.approx(-1.0)
    assert iqa_metrics(pred, target)["srcc"] < 0.5       # the pooled figure hides it
    with pytest.raises(ValueError):
        within_group_srcc([1, 2], [1, 2], ["a", "b"])


def test_paired_difference_separates_a_real_gap_from_noise():
    rng = np.random.default_rng(0)
    target = rng.uniform(0, 100, 400)
    good = target + rng.normal(0, 10, 400)
    bad = target + rng.normal(0, 40, 400)
    gap = paired_difference(good, bad, target, n_resamples=500)
    assert gap["difference"] > 0.1 and gap["interval"][0] > 0 and not gap["interval_contains_zero"]
    assert gap["interval"][0] <= gap["difference"] <= gap["interval"][1]
    # Two models that differ only by noise of the same size: the interval straddles zero, and
    # swapping A and B mirrors the difference.
    twin = target + rng.normal(0, 10, 400)
    same = paired_difference(good, twin, target, metric="plcc", n_resamples=500)
    assert same["interval_contains_zero"]
    swapped = paired_difference(twin, good, target, metric="plcc", n_resamples=500)
    assert swapped["difference"] == pytest.approx(-same["difference"])
    with pytest.raises(ValueError):
        paired_difference(good, bad[:-1], target)
    with pytest.raises(ValueError):
        paired_difference(good, bad, target, metric="rmse")
