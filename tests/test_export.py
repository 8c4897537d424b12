"""Export of the bundled student: ONNX files, parity with PyTorch, TensorRT-RTX engine builds."""
import json

import numpy as np
import onnx
import pytest

from conftest import BUNDLE, run_script as _run, run_scripts
from export import onnx_export, parity, uint8_front
from qfm_core import io_names
from export.build_engine import fp32_weight_nodes
from export.onnx_export import check
from training.checkpoint import load_student
from qfm_core.crops import channels_first, grid_crops, load_rgb, normalize


@pytest.fixture(scope="module")
def model():
    return load_student(BUNDLE)


def test_onnx_signatures(exported):
    for precision, in_dtype in (("fp32", "float"), ("fp16", "float16")):
        sig = check(exported / f"qfm_student_{precision}.onnx")
        assert sig["inputs"] == {io_names.CROPS: {"dtype": in_dtype, "shape": [io_names.BATCH_AXIS, 3, 224, 224]}}
        assert sig["outputs"] == {io_names.CROP_SCORES: {"dtype": "float", "shape": [io_names.BATCH_AXIS]},
                                  io_names.CROP_EMBEDDINGS: {"dtype": "float", "shape": [io_names.BATCH_AXIS, 384]}}
    fp16 = onnx.load(str(exported / "qfm_student_fp16.onnx"))
    # FP16 weights, not FP32 with casts, except in the backbone stages the report says were kept
    # FP32 for parity (and those only if pure FP16 missed the limits: at most the stem + 2 blocks).
    kept = json.loads((exported / "onnx_report.json").read_text())["fp16_precision"]["fp32_stages"]
    assert len(kept) <= 3
    kept_nodes = {n for name, nodes in onnx_export.backbone_stages(fp16) if name in kept for n in nodes}
    readers = set(fp32_weight_nodes(exported / "qfm_student_fp16.onnx"))
    assert readers <= kept_nodes and (readers or not kept)
    # Every weight read outside the kept stages is FP16 itself (not FP32 behind a Cast), and the
    # kept stages are the smaller part of the network.
    weight_type = {t.name: t.data_type for t in fp16.graph.initializer if len(t.dims) > 1}
    outside = [weight_type[i] for node in fp16.graph.node if node.name not in kept_nodes
               for i in node.input if i in weight_type]
    assert outside and set(outside) == {onnx.TensorProto.FLOAT16}
    types = list(weight_type.values())
    assert types.count(onnx.TensorProto.FLOAT16) > 3 * types.count(onnx.TensorProto.FLOAT)
    assert not any("input." in n.name or n.name.startswith("onnx::") for n in fp16.graph.input)


def test_fp16_conversion_can_keep_the_first_stages_fp32(exported, model, tmp_path):
    """The mixed-precision fallback: the stem kept FP32 gives a valid graph (initializers the kept
    nodes share with FP16 ones are duplicated, not retyped) that ONNX Runtime runs, with FP32
    weights exactly in the stem."""
    fp32 = exported / "qfm_student_fp32.onnx"
    stages = onnx_export.backbone_stages(onnx.load(str(fp32)))
    assert [name for name, _ in stages] == ["stem"] + [f"blocks.{i}" for i in range(7)]  # EfficientNet-Lite0
    stem = stages[0][1]
    mixed = tmp_path / "mixed.onnx"
    onnx_export.convert_fp16(fp32, mixed, keep_fp32=tuple(stem))
    check(mixed)
    graph = onnx.load(str(mixed)).graph
    weights = {t.name for t in graph.initializer if len(t.dims) > 1}
    weighted_stem = {n.name for n in graph.node if n.name in stem and weights.intersection(n.input)}
    assert set(fp32_weight_nodes(mixed)) == weighted_stem and weighted_stem  # the stem conv, and nothing else
    x = parity.parity_crops(model, 2)
    r = parity.compare(parity.run_torch(model, x), parity.run_onnx(parity.ort_session(mixed), x))
    assert r["max_abs_score_diff"] < 1.0 and r["min_embedding_cosine"] > 0.999, r


def test_to_onnx_rejects_a_bad_fp32_stage_count(tmp_path):
    word, big = run_scripts(("export/to_onnx.py", "--checkpoint", BUNDLE, "--out", tmp_path, "--fp32-stages", "some"),
                            ("export/to_onnx.py", "--checkpoint", BUNDLE, "--out", tmp_path, "--fp32-stages", "99"))
    assert word.returncode == 2 and "--fp32-stages" in word.stderr
    assert big.returncode == 2 and "the backbone has 8 stages" in big.stderr
    assert not list(tmp_path.glob("*.onnx")), "refused before exporting"


def test_export_report_meets_limits(exported):
    report = json.loads((exported / "onnx_report.json").read_text())
    assert report["parity_ok"] is True
    assert report["parity_fp32"]["max_abs_score_diff"] <= 1e-3
    assert report["parity_fp16"]["max_abs_score_diff"] <= 0.5
    assert report["parity_fp16"]["srcc_vs_reference"] >= 0.999
    assert report["fp16"]["bytes"] < 0.6 * report["fp32"]["bytes"]


def test_parity_on_real_photographs_and_odd_batches(exported, model, livec_dev):
    """Independent of the export's own report: crops of real LIVEC photographs, batch sizes 1/3/7."""
    rows = (livec_dev / "mos.csv").read_text().splitlines()[1:9]
    crops = np.concatenate([grid_crops(load_rgb(livec_dev / r.split(",")[0]), 224, 2) for r in rows])
    x = normalize(crops, model.cfg.mean, model.cfg.std)
    ref = parity.run_torch(model, x)
    fp32 = parity.ort_session(exported / "qfm_student_fp32.onnx")
    fp16 = parity.ort_session(exported / "qfm_student_fp16.onnx")
    for batch in (1, 3, 7):
        r32 = parity.compare(ref, parity.run_onnx(fp32, x, batch))
        assert r32["max_abs_score_diff"] <= 1e-3, (batch, r32)
        assert r32["min_embedding_cosine"] > 0.99999
    r16 = parity.compare(ref, parity.run_onnx(fp16, x, 7))
    assert r16["max_abs_score_diff"] <= 0.5 and r16["srcc_vs_reference"] >= 0.999, r16


def test_uint8_serving_model_normalises_like_the_preprocess(exported, model, livec_dev, tmp_path):
    """The CPU serving student takes raw pixels and normalises in-graph: same scores as PyTorch on
    NumPy-normalised crops."""
    rows = (livec_dev / "mos.csv").read_text().splitlines()[1:4]
    crops = np.concatenate([grid_crops(load_rgb(livec_dev / r.split(",")[0]), 224, 2) for r in rows])
    u8 = tmp_path / "u8.onnx"
    uint8_front.with_uint8_input(exported / "qfm_student_fp32.onnx", u8, model.cfg.mean, model.cfg.std)
    assert check(u8)["inputs"][io_names.CROPS]["dtype"] == "uint8"
    ref = parity.run_torch(model, normalize(crops, model.cfg.mean, model.cfg.std))
    got = parity.compare(ref, parity.run_onnx(parity.ort_session(u8), np.ascontiguousarray(channels_first(crops)), 5))
    assert got["max_abs_score_diff"] <= 1e-3 and got["min_embedding_cosine"] > 0.99999, got


@pytest.mark.parametrize("precision,cc", [("fp16", "8.9"), ("fp32", "8.0")])
def test_tensorrt_rtx_builds_the_student(exported, tmp_path, precision, cc):
    engine = tmp_path / f"student_{precision}.plan"
    r = _run("export/build_engine.py", "--backend", "tensorrt-rtx", "--compute-capability", cc,
             "--precision", precision, "--onnx", exported / f"qfm_student_{precision}.onnx", "--engine", engine,
             "--min-batch", "1", "--opt-batch", "8", "--max-batch", "64")
    assert r.returncode == 0, r.stderr[-3000:]
    assert engine.stat().st_size > 1_000_000 and not list(tmp_path.glob("*.partial"))
    meta = json.loads(engine.with_name(engine.name + ".json").read_text())
    assert meta["precision"] == precision and meta["compute_capability"] == cc
    io = {t["name"]: t for t in meta["io"]}
    assert io[io_names.CROPS]["dtype"] == ("half" if precision == "fp16" else "float")
    assert io[io_names.CROPS]["shape"] == [-1, 3, 224, 224]  # dynamic batch
    assert io[io_names.CROP_SCORES]["dtype"] == "float" and io[io_names.CROP_EMBEDDINGS]["shape"] == [-1, 384]
    assert meta["profiles"][0]["min"][0] == 1 and meta["profiles"][0]["max"][0] == 64
    assert meta["engine_sha256"] and meta["onnx_sha256"]


def test_broken_onnx_gives_a_readable_error(exported, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes((exported / "qfm_student_fp16.onnx").read_bytes()[:50_000])
    engine = tmp_path / "broken.plan"
    r = _run("export/build_engine.py", "--backend", "tensorrt-rtx", "--compute-capability", "8.9",
             "--onnx", broken, "--engine", engine)
    assert r.returncode != 0
    assert "error:" in r.stderr and "Traceback" not in r.stderr
    assert not engine.exists() and not list(tmp_path.glob("*.partial"))


def test_unsupported_op_reports_the_parser_errors(tmp_path):
    """A well-formed ONNX that TensorRT's parser rejects: its errors are printed, exit is non-zero."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info(io_names.CROPS, TensorProto.FLOAT16, ["batch", 3, 224, 224])
    y = helper.make_tensor_value_info(io_names.CROP_SCORES, TensorProto.FLOAT, ["batch"])
    node = helper.make_node("QfmNoSuchOp", [io_names.CROPS], [io_names.CROP_SCORES], domain="qfm.test")
    model = helper.make_model(helper.make_graph([node], "bad", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("qfm.test", 1)])
    path = tmp_path / "unsupported.onnx"
    onnx.save(model, str(path))
    r = _run("export/build_engine.py", "--backend", "tensorrt-rtx", "--compute-capability", "8.9",
             "--onnx", path, "--engine", tmp_path / "u.plan")
    assert r.returncode == 3 and "parser:" in r.stderr and "could not parse" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and not (tmp_path / "u.plan").exists()


def test_flag_validation_and_missing_tensorrt(exported, tmp_path):
    onnx16 = exported / "qfm_student_fp16.onnx"
    r = _run("export/build_engine.py", "--backend", "tensorrt-rtx", "--onnx", onnx16, "--engine", tmp_path / "e.plan")
    assert r.returncode == 2 and "--compute-capability" in r.stderr
    r = _run("export/build_engine.py", "--backend", "tensorrt-rtx", "--compute-capability", "8.9", "--precision",
             "fp32", "--onnx", onnx16, "--engine", tmp_path / "e.plan")
    assert r.returncode == 3 and "strongly typed" in r.stderr
    r = _run("export/build_engine.py", "--onnx", onnx16, "--engine", tmp_path / "e.plan")
    # Here there is neither datacenter TensorRT nor a GPU: one line saying what is missing.
    assert r.returncode == 3
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and ("install" in lines[0] or "GPU" in lines[0])
    assert not (tmp_path / "e.plan").exists()


def test_demo_artifacts_are_stale_by_content_not_mtime(tmp_path):
    # `make demo` / `make bench` rebuild the ONNX file and the bank only when the weights change:
    # a checkout that only touches them must not cost a re-export, a real change must force one.
    import os

    from serving import demo

    weights, target = tmp_path / "model.safetensors", tmp_path / "model.onnx"
    weights.write_bytes(b"weights v1")

    def built_from(bank_dataset):
        return demo._fingerprint(weights) + f"bank dataset: {bank_dataset}\n"

    assert demo._stale(target, built_from("livec"))  # nothing built yet
    target.write_bytes(b"onnx")
    assert demo._stale(target, built_from("livec"))  # built by something that left no stamp
    demo._mark_built(target, built_from("livec"))
    assert not demo._stale(target, built_from("livec"))
    os.utime(weights, (target.stat().st_mtime + 100,) * 2)  # newer mtime, same bytes
    assert not demo._stale(target, built_from("livec"))
    assert demo._stale(target, built_from("koniq10k"))
    weights.write_bytes(b"weights v2")
    assert demo._stale(target, built_from("livec"))


def test_noise_sensitivity_perturbations_stay_invisible(model, tmp_path):
    """benchmarks/noise_sensitivity.py: its perturbations are what it says (at most one grey level
    for requant_1, FP16 rounding only for fp16_input), and the command reports real score changes."""
    from benchmarks.noise_sensitivity import perturbations

    x = parity.parity_crops(model, 1)
    mean = np.asarray(model.cfg.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(model.cfg.std, np.float32).reshape(1, 3, 1, 1)
    grey = np.rint((x * std + mean) * 255)
    p = perturbations(x, model.cfg.mean, model.cfg.std, np.random.default_rng(0))
    moved = np.rint((p["requant_1"] * std + mean) * 255) - grey
    assert np.abs(moved).max() == 1 and 0.5 < (moved != 0).mean() < 0.8  # 2/3 of pixels, minus clipping
    assert np.abs(p["fp16_input"] - x).max() < 1e-2 and np.abs(p["fp16_input"] - x).max() > 0
    out = tmp_path / "noise.json"
    r = _run("benchmarks/noise_sensitivity.py", "--checkpoint", BUNDLE, "--images", "2", "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["n_crops"] == 8
    distortions = {d for _, d, _ in parity.parity_images(2)}
    for name in ("fp16_input", "gauss_0.5", "requant_1"):
        assert 0 < result[name]["mean_abs_score_diff"] <= result[name]["max_abs_score_diff"]
        worst = result[name]["largest"][0]
        assert abs(worst["change"]) == pytest.approx(result[name]["max_abs_score_diff"], abs=0.01)
        assert worst["distortion"].split("@")[0] in distortions
