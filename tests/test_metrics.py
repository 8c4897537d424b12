import numpy as np
import pytest
from scipy import stats

from training.metrics import iqa_metrics


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
