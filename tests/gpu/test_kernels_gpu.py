"""Our CUDA kernels against the float64 reference, on a GPU (skipped without one).

Fresh random data per case, outputs poisoned (NaN / -7) before each run so a kernel that skips a
write cannot pass, odd sizes, k = 1 and k = 32, exact ties, both metrics, every tile tactic.
Run with the rest of the GPU checks: `bash benchmarks/gpu_check.sh`.
"""
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
# gpu_check.sh --dry-run (QFM_DRY_RUN=1) collects these tests on a CPU: imports and parametrisation
# are checked there; nothing runs.
if not torch.cuda.is_available() and os.environ.get("QFM_DRY_RUN") != "1":
    pytest.skip("no CUDA GPU visible (these tests need one; CI has none)", allow_module_level=True)

from export.kernels import reference  # noqa: E402
from export.kernels.compile import TILES  # noqa: E402
from export.kernels.launch import PairwiseTopK  # noqa: E402

TOL = {"sq_l2": 2e-3, "cosine": 2e-4}   # relative to the distance scale; fp32 accumulation of fp16 products


@pytest.fixture(scope="module")
def knn():
    return PairwiseTopK()


def _data(seed, n, m, d):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float16), rng.normal(size=(m, d)).astype(np.float16)


def _poisoned(n, k):
    return (torch.full((n, k), float("nan"), device="cuda"), torch.full((n, k), -7, device="cuda", dtype=torch.int32))


def _check_topk(q, b, k, metric, got_d, got_i):
    ref_d, ref_i = reference.topk(q, b, k, metric)
    got_d, got_i = got_d.cpu().numpy().astype(np.float64), got_i.cpu().numpy()
    assert np.isfinite(got_d).all() and (got_i >= 0).all(), "unwritten output"
    scale = np.abs(ref_d).max() + 1.0
    np.testing.assert_allclose(got_d, ref_d, atol=TOL[metric] * scale)
    full = reference.distances(q, b, metric)
    # the chosen rows are truly among the k best: their exact distances equal the reference's
    np.testing.assert_allclose(np.take_along_axis(full, got_i, 1), ref_d, atol=TOL[metric] * scale)
    # and the order is exact wherever the reference's neighbours are separated by more than the tolerance
    gaps = np.diff(np.sort(full, 1)[:, :k + 1], axis=1).min(1)
    clear = gaps > 4 * TOL[metric] * scale
    np.testing.assert_array_equal(got_i[clear], ref_i[clear])


@pytest.mark.parametrize("metric", ["sq_l2", "cosine"])
@pytest.mark.parametrize("tactic", sorted(TILES))
@pytest.mark.parametrize("n,m,d,k", [(1, 1000, 384, 1), (3, 777, 384, 32), (67, 5003, 384, 8),
                                     (130, 4099, 136, 32), (256, 20011, 384, 5)])
def test_topk_matches_reference(knn, metric, tactic, n, m, d, k):
    q, b = _data(hash((n, m, d, k, tactic)) % 2**32, n, m, d)
    out = _poisoned(n, k)
    got_d, got_i = knn.topk(torch.from_numpy(q), torch.from_numpy(b), k, metric, tactic=tactic, out=out)
    _check_topk(q, b, k, metric, got_d, got_i)


@pytest.mark.parametrize("metric", ["sq_l2", "cosine"])
@pytest.mark.parametrize("tactic", sorted(TILES))
def test_pairwise_matches_reference(knn, metric, tactic):
    q, b = _data(tactic, 37, 1001, 200)
    out = torch.full((37, 1001), float("nan"), device="cuda")
    got = knn.pairwise(torch.from_numpy(q), torch.from_numpy(b), metric, tactic=tactic, out=out).cpu().numpy()
    ref = reference.distances(q, b, metric)
    np.testing.assert_allclose(got, ref, atol=TOL[metric] * (np.abs(ref).max() + 1.0))


@pytest.mark.parametrize("k", [1, 32])
def test_ties_rank_lower_index_first(knn, k):
    rng = np.random.default_rng(5)
    b = rng.normal(size=(3000, 384)).astype(np.float16)
    dup = [11, 700, 1500, 2999] + list(range(40, 40 + 40))   # 44 identical rows across splits
    b[dup] = b[5]
    q = b[[5, 5, 5]]
    got_d, got_i = knn.topk(torch.from_numpy(q), torch.from_numpy(b), k, splits=7, out=_poisoned(3, k))
    expected = sorted([5] + dup)[:k]
    assert got_i.cpu().numpy().tolist() == [expected] * 3
    d = got_d.cpu().numpy()
    assert np.ptp(d) == 0 and d.max() < 1e-2   # identical rows: one distance, ~0 (fp32 rounding)


def test_split_counts_do_not_change_the_answer(knn):
    q, b = _data(9, 16, 9000, 384)
    results = [knn.topk(torch.from_numpy(q), torch.from_numpy(b), 16, splits=s) for s in (1, 3, 64, 141)]
    for d, i in results[1:]:
        torch.testing.assert_close(d, results[0][0])
        assert torch.equal(i, results[0][1])


@pytest.mark.parametrize("metric", ["sq_l2", "cosine"])
@pytest.mark.parametrize("tactic", sorted(TILES))
def test_feature_width_not_a_multiple_of_8_is_padded(knn, metric, tactic):
    q, b = _data(11 + tactic, 19, 2049, 100)   # D = 100: the launcher zero-pads to 104
    got_d, got_i = knn.topk(torch.from_numpy(q), torch.from_numpy(b), 9, metric, tactic=tactic, out=_poisoned(19, 9))
    _check_topk(q, b, 9, metric, got_d, got_i)


@pytest.mark.parametrize("tactic", sorted(TILES))
def test_zero_norm_rows_under_cosine(knn, tactic):
    """A zero row has cosine distance exactly 1 to everything (the norm floor), like the reference."""
    q, b = _data(21, 7, 777, 384)
    q[2] = 0
    b[[0, 100, 776]] = 0
    got_d, got_i = knn.topk(torch.from_numpy(q), torch.from_numpy(b), 16, "cosine", tactic=tactic, out=_poisoned(7, 16))
    _check_topk(q, b, 16, "cosine", got_d, got_i)
    full = knn.pairwise(torch.from_numpy(q), torch.from_numpy(b), "cosine", tactic=tactic).cpu().numpy()
    np.testing.assert_allclose(full[2], 1.0, atol=1e-6)
    np.testing.assert_allclose(full[:, [0, 100, 776]], 1.0, atol=1e-6)


@pytest.mark.parametrize("metric", ["sq_l2", "cosine"])
def test_non_finite_queries_return_real_rows_ranked_last(knn, metric):
    q, b = _data(31, 4, 3000, 384)
    q[1] = np.nan
    q[3, 5] = np.inf
    got_d, got_i = knn.topk(torch.from_numpy(q), torch.from_numpy(b), 8, metric, splits=5, out=_poisoned(4, 8))
    d, i = got_d.cpu().numpy(), got_i.cpu().numpy()
    assert ((i >= 0) & (i < 3000)).all()
    assert (d[1] == np.finfo(np.float32).max).all() and i[1].tolist() == list(range(8))
    _check_topk(q[[0, 2]], b, 8, metric, got_d[[0, 2]], got_i[[0, 2]])


def test_launches_leave_the_callers_context_current(knn):
    """Loads and launches push the device's primary context and pop it again."""
    from cuda.bindings import driver
    before = driver.cuCtxGetCurrent()[1]
    q, b = _data(41, 33, 5000, 384)
    got_d, got_i = knn.topk(torch.from_numpy(q), torch.from_numpy(b), 5, "cosine", out=_poisoned(33, 5))
    torch.cuda.synchronize()
    assert int(driver.cuCtxGetCurrent()[1]) == int(before)
    _check_topk(q, b, 5, "cosine", got_d, got_i)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_a_launcher_on_the_second_gpu(knn):
    second = PairwiseTopK(1)
    q, b = _data(51, 16, 4000, 384)
    with torch.cuda.device(0):
        got_d, got_i = second.topk(torch.from_numpy(q), torch.from_numpy(b), 7)
    assert got_d.device == torch.device("cuda", 1)
    _check_topk(q, b, 7, "sq_l2", got_d, got_i)
    with pytest.raises(ValueError, match="launcher runs on"):
        second.pairwise(torch.from_numpy(q), torch.from_numpy(b), out=torch.empty(16, 4000, device="cuda:0"))


def test_match_engine_with_our_plugins(tmp_path):
    """The AOT plugin path end to end where datacenter TensorRT is installed."""
    pytest.importorskip("tensorrt")
    import tensorrt as trt

    from benchmarks.tensorrt_check import check_match
    assert check_match(trt, tmp_path)["ok"]
