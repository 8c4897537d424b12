"""IQA correlation metrics via scipy: SRCC (the key metric), PLCC raw and after the usual
4-parameter logistic fit (VQEG), KRCC, RMSE."""
from __future__ import annotations

import warnings

import numpy as np
from scipy import optimize, stats


def logistic4(x, b1, b2, b3, b4):
    return (b1 - b2) / (1.0 + np.exp(-(x - b3) / np.abs(b4))) + b2


def fit_logistic4(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Map predictions onto the target scale with the monotone 4-parameter logistic."""
    p0 = [target.max(), target.min(), float(np.mean(pred)), float(np.std(pred)) or 1.0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params, _ = optimize.curve_fit(logistic4, pred, target, p0=p0, maxfev=20000)
        return logistic4(pred, *params)
    except (RuntimeError, ValueError):  # no convergence: fall back to the identity map
        return pred


def iqa_metrics(pred, target) -> dict:
    """All metrics of predictions against targets on the same (0..100) scale."""
    pred, target = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if pred.shape != target.shape or pred.ndim != 1:
        raise ValueError(f"pred and target must be equal-length vectors, got {pred.shape} and {target.shape}")
    if len(pred) < 3:
        raise ValueError("need at least 3 items for correlation metrics")
    fitted = fit_logistic4(pred, target)
    return {
        "srcc": float(stats.spearmanr(pred, target)[0]),
        "plcc": float(stats.pearsonr(pred, target)[0]),
        "plcc_logistic": float(stats.pearsonr(fitted, target)[0]),
        "krcc": float(stats.kendalltau(pred, target)[0]),
        "rmse": float(np.sqrt(np.mean((pred - target) ** 2))),
        "rmse_logistic": float(np.sqrt(np.mean((fitted - target) ** 2))),
        "n": int(len(pred)),
    }


def within_group_srcc(pred, target, groups) -> dict:
    """SRCC inside each group (e.g. the distorted versions of one reference photograph), median and
    minimum over groups. It asks only whether the model orders one photo's degradations, so it is
    immune to per-photo offsets that full-reference labels carry and an NR model cannot know."""
    pred, target, groups = np.asarray(pred, np.float64), np.asarray(target, np.float64), np.asarray(groups)
    values = []
    for g in np.unique(groups):
        idx = groups == g
        if idx.sum() >= 3 and np.ptp(target[idx]) > 0:
            values.append(float(stats.spearmanr(pred[idx], target[idx])[0]))
    if not values:
        raise ValueError("no group with at least 3 items and varying targets")
    return {"median": float(np.median(values)), "min": float(np.min(values)), "groups": len(values)}


def iqa_report(pred, target, groups=None) -> dict:
    """iqa_metrics, plus `srcc_within_reference` where items carry reference ids (synthetic and
    other full-reference sets): the figure per-photo label offsets cannot move."""
    report = iqa_metrics(pred, target)
    if groups is not None and any(groups):
        report["srcc_within_reference"] = within_group_srcc(pred, target, groups)
    return report


_CORRELATIONS = {"srcc": lambda p, t: stats.spearmanr(p, t)[0], "plcc": lambda p, t: stats.pearsonr(p, t)[0]}


def paired_difference(pred_a, pred_b, target, metric: str = "srcc", n_resamples: int = 2000,
                      seed: int = 0, confidence: float = 0.95) -> dict:
    """metric(a) - metric(b) on the same items, with a paired percentile bootstrap interval
    (scipy.stats.bootstrap resamples items, keeping each item's two predictions and its target
    together). Items that share a source photograph are not independent, so for clustered data
    the interval is narrower than the truth; the caller says so."""
    if metric not in _CORRELATIONS:
        raise ValueError(f"metric must be one of {sorted(_CORRELATIONS)}, got {metric!r}")
    a, b, t = (np.asarray(x, dtype=np.float64) for x in (pred_a, pred_b, target))
    if not (a.shape == b.shape == t.shape) or a.ndim != 1 or len(a) < 3:
        raise ValueError(f"need three equal-length vectors of at least 3 items, got {a.shape}, {b.shape}, {t.shape}")
    corr = _CORRELATIONS[metric]

    def diff(a_, b_, t_):
        return corr(a_, t_) - corr(b_, t_)

    res = stats.bootstrap((a, b, t), diff, paired=True, vectorized=False, n_resamples=n_resamples,
                          confidence_level=confidence, method="percentile", random_state=seed)
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return {"metric": metric, "a": float(corr(a, t)), "b": float(corr(b, t)), "difference": float(diff(a, b, t)),
            "interval": [low, high], "confidence": confidence, "n_resamples": n_resamples, "seed": seed,
            "interval_contains_zero": bool(low <= 0.0 <= high)}
