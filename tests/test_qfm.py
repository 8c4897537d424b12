"""Semantic-noise matching against a brute-force float64 reference, the memory bank, losses."""
import numpy as np
import pytest
import torch

from training.qfm.losses import plcc_loss
from training.qfm.matching import pairwise_cosine, pairwise_sq_l2, semantic_noise_match
from training.qfm.memory import MemoryBank


def _reference_match(f, s, bf, bs, tau, metric):
    f, bf = f.double().numpy(), bf.double().numpy()
    idx, valid = [], []
    for i in range(len(f)):
        best, best_d = 0, None
        for j in range(len(bf)):
            if abs(float(s[i]) - float(bs[j])) > tau:
                continue
            if metric == "sq_l2":
                d = float(((f[i] - bf[j]) ** 2).sum())
            else:
                d = 1 - float(f[i] @ bf[j] / (np.linalg.norm(f[i]) * np.linalg.norm(bf[j])))
            if best_d is None or d > best_d + 1e-9:
                best, best_d = j, d
        idx.append(best)
        valid.append(best_d is not None)
    return idx, valid


@pytest.mark.parametrize("metric", ["sq_l2", "cosine"])
@pytest.mark.parametrize("n,m,d", [(1, 1, 8), (7, 33, 16), (32, 200, 384)])
def test_match_equals_brute_force(metric, n, m, d):
    g = torch.Generator().manual_seed(n * 1000 + m)
    f, bf = torch.randn(n, d, generator=g), torch.randn(m, d, generator=g)
    s, bs = torch.rand(n, generator=g) * 100, torch.rand(m, generator=g) * 100
    idx, valid = semantic_noise_match(f, s, bf, bs, tau=4.0, metric=metric)
    ref_idx, ref_valid = _reference_match(f, s, bf, bs, 4.0, metric)
    assert valid.tolist() == ref_valid
    assert [i for i, v in zip(idx.tolist(), ref_valid) if v] == [i for i, v in zip(ref_idx, ref_valid) if v]


def test_match_picks_far_features_of_similar_quality():
    f = torch.tensor([[1.0, 0.0]])
    bank = torch.tensor([[1.0, 0.1], [-1.0, 0.0], [-1.0, 0.05], [0.0, 1.0]])
    scores = torch.tensor([50.0, 90.0, 51.0, 50.5])  # the farthest (index 1) has a different quality
    idx, valid = semantic_noise_match(f, torch.tensor([50.0]), bank, scores, tau=2.0, metric="sq_l2")
    assert valid.item() and idx.item() == 2
    _, valid = semantic_noise_match(f, torch.tensor([10.0]), bank, scores, tau=2.0)
    assert not valid.item()


def test_pairwise_distances_match_float64():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(17, 384, generator=g), torch.randn(29, 384, generator=g)
    ref = ((a.double()[:, None] - b.double()[None]) ** 2).sum(-1)
    assert torch.allclose(pairwise_sq_l2(a, b).double(), ref, rtol=1e-4, atol=1e-3)
    cos = 1 - torch.nn.functional.cosine_similarity(a.double()[:, None], b.double()[None], dim=-1)
    assert torch.allclose(pairwise_cosine(a, b).double(), cos, atol=1e-5)
    assert (pairwise_sq_l2(a, a).diagonal() >= 0).all()


def test_memory_bank_is_fifo():
    mem = MemoryBank(capacity=5, dim=2)
    mem.push(torch.arange(6.0).reshape(3, 2), torch.tensor([0.0, 1, 2]))
    assert mem.size == 3
    mem.push(torch.arange(6.0, 14.0).reshape(4, 2), torch.tensor([3.0, 4, 5, 6]))
    f, s = mem.contents()
    assert mem.size == 5 and sorted(s.tolist()) == [2, 3, 4, 5, 6]  # 0 and 1 were evicted
    mem.push(torch.zeros(12, 2), torch.full((12,), 9.0))  # more than capacity: keeps the newest
    assert mem.contents()[1].tolist() == [9.0] * 5


def test_plcc_loss():
    x = torch.tensor([1.0, 2, 3, 4])
    assert plcc_loss(x, 2 * x + 1).item() == pytest.approx(0.0, abs=1e-6)
    assert plcc_loss(x, -x).item() == pytest.approx(2.0, abs=1e-6)
