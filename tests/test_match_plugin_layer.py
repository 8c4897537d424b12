"""Our TensorRT plugins (export/match_plugin.py) through TensorRT's real `tensorrt.plugin` package,
as TensorRT's builder calls them: registration-time validation, format combinations, tactics,
output shapes, launch geometry, extra kernel arguments and kernel symbol, for several shapes.
Only libnvinfer is stood in (tests/tensorrt_standin.py)."""
import math
import re

import numpy as np
import pytest

import tensorrt_standin as standin
from export import match_plugin
from export.kernels.compile import TILES
from export.kernels.launch import split_bank

Expr = standin.Expr
CASES = [(300, 1_000_003, 384, 32), (1, 1000, 384, 1), (77, 5003, 136, 5), (256, 1_000_000, 384, 10)]


@pytest.fixture
def trt_layer():
    trt, trtp = standin.install()
    yield trt, trtp
    standin.uninstall()


def _ptx_params(ptx: bytes, kernel: str) -> list[str]:
    entry = re.search(rf"\.entry {kernel}\((.*?)\)", ptx.decode(), re.S)
    assert entry, f"{kernel} is not an entry of the returned PTX"
    return re.findall(r"\.param \.(\w+)", entry.group(1))


def test_both_plugins_register_and_registration_is_idempotent(trt_layer):
    trt, trtp = trt_layer
    match_plugin.register()
    match_plugin.register()
    assert match_plugin.registered()
    creators = trt.get_plugin_registry().creators
    assert {("knn_partial", "1", "qfm"), ("knn_merge", "1", "qfm")} <= set(creators)


def test_string_annotations_fail_tensorrts_validator(trt_layer):
    """Why match_plugin.py must not use `from __future__ import annotations`: the validator
    compares annotations to classes, and a string is no class (10.9 raises TypeError from
    issubclass, later releases ValueError)."""
    _, trtp = trt_layer
    with pytest.raises((TypeError, ValueError)):
        @trtp.register("qfmtest::strings")
        def desc(query: "trtp.TensorDesc", k: "int") -> "trtp.TensorDesc":
            return query.like()


@pytest.mark.parametrize("n,m,d,k", CASES)
def test_partial_plugin_as_tensorrt_builds_it(trt_layer, n, m, d, k):
    trt, trtp = trt_layer
    match_plugin.register()
    splits, _ = split_bank(m, 32, 2, sm_count=132)   # what build_match_engine.py chooses
    call = trtp.op.qfm.knn_partial(trt.ITensor(), trt.ITensor(), k=k, splits=splits, metric="cosine")
    got = standin.drive(trt, call, [trt.float16, trt.float16],
                        [[Expr(symbol="N"), Expr(value=d)], [Expr(value=m), Expr(value=d)]], {"N": n})
    assert got["output_types"] == [trt.float32, trt.int32]
    assert got["output_shapes"] == [[n, splits * k], [n, splits * k]]
    half, fp32, i32, linear = trt.DataType.HALF, trt.DataType.FLOAT, trt.DataType.INT32, trt.TensorFormat.LINEAR
    assert got["combinations"] == [{"types": [half, half, fp32, i32], "formats": [linear] * 4,
                                    "tactics": sorted(TILES)}]
    chunk = math.ceil(m / splits)
    assert splits * chunk >= m > (splits - 1) * chunk
    ptxs = set()
    for launch in got["launches"]:
        qt = TILES[launch["tactic"]][0]
        assert launch["kernel"] == "qfm_topk_partial"
        assert launch["grid"] == (splits, math.ceil(n / qt), 1) and launch["block"] == (256, 1, 1)
        assert launch["shared_mem"] == 0
        assert [v for _, v in launch["scalars"]] == [n, m, d, k, chunk]
        assert {t for t, _ in launch["scalars"]} == {trt.PluginArgDataType.INT32}
        # inputs, then the extra int32 scalars, then outputs: exactly the kernel's parameters
        assert _ptx_params(launch["ptx"], "qfm_topk_partial") == ["u64"] * 2 + ["u32"] * 5 + ["u64"] * 2
        assert b".target sm_80" in launch["ptx"]     # no GPU here: the JIT-able default
        ptxs.add(launch["ptx"])
    assert len(ptxs) == len(TILES), "each tactic must carry its own tile configuration"


@pytest.mark.parametrize("n,m,d,k", CASES)
def test_merge_plugin_as_tensorrt_builds_it(trt_layer, n, m, d, k):
    trt, trtp = trt_layer
    match_plugin.register()
    length = split_bank(m, 32, 2, sm_count=132)[0] * k
    call = trtp.op.qfm.knn_merge(trt.ITensor(), trt.ITensor(), k=k)
    got = standin.drive(trt, call, [trt.float32, trt.int32],
                        [[Expr(symbol="N"), Expr(value=length)]] * 2, {"N": n})
    assert got["output_types"] == [trt.float32, trt.int32]
    assert got["output_shapes"] == [[n, k], [n, k]]
    fp32, i32 = trt.DataType.FLOAT, trt.DataType.INT32
    assert [c["types"] for c in got["combinations"]] == [[fp32, i32, fp32, i32]]
    (launch,) = got["launches"]
    assert launch["kernel"] == "qfm_topk_merge" and launch["tactic"] == 0
    assert launch["grid"] == (math.ceil(n / 8), 1, 1) and launch["block"] == (256, 1, 1)
    assert [v for _, v in launch["scalars"]] == [n, length, k]
    assert _ptx_params(launch["ptx"], "qfm_topk_merge") == ["u64"] * 2 + ["u32"] * 3 + ["u64"] * 2


def test_plugin_creation_does_not_rely_on_numpy_typing_being_imported(trt_layer, monkeypatch):
    """tensorrt.plugin's create_plugin evaluates `np.typing.NDArray` but never imports
    numpy.typing; with numpy 1.26 that is an AttributeError unless someone else imported it.
    register() imports it."""
    import sys
    trt, trtp = trt_layer
    monkeypatch.delitem(sys.modules, "numpy.typing", raising=False)
    monkeypatch.delattr(np, "typing", raising=False)
    match_plugin.register()
    _, _, plugin = trtp.op.qfm.knn_merge(trt.ITensor(), trt.ITensor(), k=3)(trt.QuickPluginCreationRequest.STRICT_AOT)
    assert plugin.num_outputs == 2


def test_bad_attributes_are_refused(trt_layer):
    trt, trtp = trt_layer
    match_plugin.register()
    with pytest.raises(ValueError, match="Unexpected type"):          # tensorrt.plugin's own check
        trtp.op.qfm.knn_partial(trt.ITensor(), trt.ITensor(), k=np.int64(5), splits=3, metric="sq_l2")
    call = trtp.op.qfm.knn_partial(trt.ITensor(), trt.ITensor(), k=5, splits=3, metric="manhattan")
    with pytest.raises(ValueError, match="metric must be one of"):
        standin.drive(trt, call, [trt.float16, trt.float16],
                      [[Expr(symbol="N"), Expr(value=8)], [Expr(value=100), Expr(value=8)]], {"N": 4})


def test_tensorrt_before_10_9_is_refused_in_one_line():
    standin.install("10.8.0.43")
    try:
        with pytest.raises(match_plugin.PluginUnavailable, match=r"TensorRT 10\.8\.0\.43: .*>= 10\.9"):
            match_plugin.register()
    finally:
        standin.uninstall()


@pytest.mark.parametrize("version,expected", [("10.8.0.43", "needs TensorRT >= 10.9"), ("11.4.0.106", "no CUDA GPU")])
def test_build_match_engine_says_one_line_not_a_traceback(tmp_path, capsys, version, expected):
    """With a TensorRT that has the plugin layer, registration passes and the build stops at the
    missing GPU; with an old one, at the version. Either way one line and exit code 2."""
    from export import build_match_engine
    from qfm_core.bank import save_synthetic_bank
    bank = tmp_path / "bank.safetensors"
    save_synthetic_bank(bank, np.zeros((10, 384), np.float32), np.zeros(10, np.float32))
    standin.install(version)
    try:
        rc = build_match_engine.main(["--bank", str(bank), "--engine", str(tmp_path / "m.plan")])
    finally:
        standin.uninstall()
    err = capsys.readouterr().err
    assert rc == 2 and expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.plan").exists()
