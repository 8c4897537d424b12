import numpy as np
import pytest
from scipy import stats

from training.metrics import iqa_metrics, within_group_srcc


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
