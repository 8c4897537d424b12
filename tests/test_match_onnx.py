"""The standard-ops match model against the float64 reference the CUDA kernels are checked
against too (export/kernels/reference.py), so CPU and GPU matching answer to one definition."""
import numpy as np
import onnxruntime as ort
import pytest

from qfm_core import io_names
from export.kernels.reference import topk as _reference_topk
from export.match_onnx import build_match_model


def _run(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


@pytest.mark.parametrize("metric", ["sq_l2", "cosine"])
@pytest.mark.parametrize("n,m,k", [(1, 1, 1), (5, 37, 1), (64, 1000, 32), (3, 33, 32)])
def test_matches_float64_reference(metric, n, m, k):
    rng = np.random.default_rng(n * 7 + m)
    q, b = rng.normal(size=(n, 384)).astype(np.float32), rng.normal(size=(m, 384)).astype(np.float32)
    dist, idx = _run(build_match_model(384, k, metric), {io_names.MATCH_QUERY: q, io_names.MATCH_BANK: b})
    ref_d, ref_i = _reference_topk(q, b, k, metric)
    assert idx.shape == (n, k) and dist.dtype == np.float32
    np.testing.assert_allclose(dist, ref_d, rtol=1e-4, atol=2e-3 if metric == "sq_l2" else 1e-5)
    # Indices agree except where two reference distances are closer than float32 can tell apart.
    mismatch = idx != ref_i
    if mismatch.any():
        gaps = np.abs(np.diff(np.sort(ref_d, axis=1), axis=1)).min()
        assert gaps < 1e-3, "index order differs from the reference on well-separated distances"


def test_exact_duplicate_is_its_own_nearest_neighbour():
    rng = np.random.default_rng(0)
    b = rng.normal(size=(50, 384)).astype(np.float32) * 10
    dist, idx = _run(build_match_model(384, 3), {io_names.MATCH_QUERY: b[[7, 30]], io_names.MATCH_BANK: b})
    assert idx[:, 0].tolist() == [7, 30] and (dist[:, 0] >= 0).all() and (dist[:, 0] < 1e-1).all()


def test_baked_bank_gathers_scores_and_ids():
    rng = np.random.default_rng(1)
    b = rng.normal(size=(20, 16)).astype(np.float32)
    scores, ids = rng.uniform(0, 100, 20).astype(np.float32), np.arange(100, 120, dtype=np.int64)
    q = rng.normal(size=(4, 16)).astype(np.float32)
    dist, idx, nscores, nids = _run(build_match_model(16, 5, bank=b, bank_scores=scores, bank_ids=ids), {io_names.MATCH_QUERY: q})
    free_dist, free_idx = _run(build_match_model(16, 5), {io_names.MATCH_QUERY: q, io_names.MATCH_BANK: b})
    assert np.array_equal(idx, free_idx) and np.allclose(dist, free_dist)
    assert np.array_equal(nids, ids[idx]) and np.array_equal(nscores, scores[idx])


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        build_match_model(8, 0)
    with pytest.raises(ValueError):
        build_match_model(8, 5, bank=np.zeros((3, 8), np.float32))
    with pytest.raises(ValueError):
        build_match_model(8, 1, metric="manhattan")
