from pathlib import Path

from training.data.meta import MetaInfo, Sample, ScoreScale
from training.data.splits import protocol_split, run_protocol


def _meta(n, refs=0):
    samples = [Sample(Path(f"{i}.png"), float(i), f"r{i % refs}" if refs else "") for i in range(n)]
    return MetaInfo("t", samples, ScoreScale(0, n), "content" if refs else "random")


def test_random_split_is_80_20_and_seeded():
    m = _meta(100)
    tr, te = protocol_split(m, 0)
    assert len(tr) == 80 and len(te) == 20 and not set(tr) & set(te)
    assert protocol_split(m, 0) == (tr, te)
    assert protocol_split(m, 1) != (tr, te)


def test_content_split_keeps_references_apart():
    m = _meta(250, refs=25)
    for seed in range(5):
        tr, te = protocol_split(m, seed)
        tr_refs = {m.samples[i].ref_id for i in tr}
        te_refs = {m.samples[i].ref_id for i in te}
        assert not tr_refs & te_refs
        assert len(te_refs) == 5 and len(tr) + len(te) == 250


def test_run_protocol_reports_median():
    m = _meta(50)
    out = run_protocol(m, [0, 1, 2], lambda tr, te, seed: {"srcc": [0.5, 0.9, 0.7][seed], "n": len(te)})
    assert out["median"]["srcc"] == 0.7
    assert [r["seed"] for r in out["runs"]] == [0, 1, 2]
    assert out["runs"][0]["n"] == 10
