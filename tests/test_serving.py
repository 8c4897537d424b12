"""The Triton repository and the real server: image bytes in over gRPC, scores and matches out.

Every test here talks to a real tritonserver process (from the nvidia-pytriton wheel) on free
localhost ports, through stock tritonclient.grpc.
"""
import json
import shutil
import threading
import time

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient

from tritonclient.utils import InferenceServerException

from conftest import BUNDLE, REPO, infer_images, run_script
from export import triton_repo
from serving.triton_server import TritonServer
from qfm_core import io_names
from qfm_core.bank import BankMismatch, load_bank
from qfm_core.crops import grid_crops, load_rgb, normalize
from qfm_core.image_guard import RequestLimits

SAMPLES = ["100.png", "1001.JPG", "1003.JPG", "1004.JPG", "105.png"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory, exported, bundled_bank):
    out = tmp_path_factory.mktemp("serving")
    bank = out / "bank.safetensors"
    shutil.copyfile(bundled_bank, bank)
    triton_repo.write_repository("cpu-pip", BUNDLE, out / "repo", bank, onnx=exported / "qfm_student_fp32.onnx")
    return out


@pytest.fixture(scope="module")
def server(repo):
    with TritonServer(repo / "repo") as srv:
        yield srv


def test_server_is_localhost_and_ready(server):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    assert server.grpc_url.startswith("127.0.0.1:")
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_model_metadata(io_names.ENSEMBLE, as_json=True)
    assert [i["name"] for i in meta["inputs"]] == [io_names.IMAGE] and meta["inputs"][0]["datatype"] == "BYTES"
    assert {o["name"] for o in meta["outputs"]} == {io_names.SCORE, io_names.EMBEDDING, io_names.ITEM_ERROR, io_names.NEIGHBOR_IDS,
                                                    io_names.NEIGHBOR_SCORES, io_names.NEIGHBOR_DISTANCES}


def test_ensemble_equals_inprocess_onnxruntime(server, repo, exported, livec_dev):
    blobs = [(livec_dev / "images" / n).read_bytes() for n in SAMPLES]
    result = infer_images(server.grpc_url, blobs)
    cfg = json.loads((BUNDLE / "config.json").read_text())["student"]
    session = ort.InferenceSession(str(exported / "qfm_student_fp32.onnx"), providers=["CPUExecutionProvider"])
    bank = load_bank(repo / "bank.safetensors")
    for i, name in enumerate(SAMPLES):
        x = normalize(grid_crops(load_rgb(livec_dev / "images" / name), cfg["input_size"], 3), cfg["mean"], cfg["std"])
        score, emb = session.run([io_names.CROP_SCORES, io_names.CROP_EMBEDDINGS], {io_names.CROPS: x})
        assert abs(result.as_numpy(io_names.SCORE)[i] - score.mean()) <= 1e-3
        np.testing.assert_allclose(result.as_numpy(io_names.EMBEDDING)[i], emb.mean(0), atol=1e-4)
        d = ((bank["embeddings"].astype(np.float64) - emb.mean(0)) ** 2).sum(1)
        ref = np.argsort(d, kind="stable")[:5]
        assert result.as_numpy(io_names.NEIGHBOR_IDS)[i].tolist() == ref.tolist()
        np.testing.assert_allclose(result.as_numpy(io_names.NEIGHBOR_DISTANCES)[i], d[ref], rtol=1e-3, atol=1e-2)
        np.testing.assert_array_equal(result.as_numpy(io_names.NEIGHBOR_SCORES)[i], bank["scores"][ref])
    # 100.png is in the bank (first 40 LIVEC images): it must find itself first.
    assert bank["names"][result.as_numpy(io_names.NEIGHBOR_IDS)[0][0]].endswith("100.png")


def test_bad_image_gets_its_own_error(server, livec_dev):
    good = (livec_dev / "images" / SAMPLES[0]).read_bytes()
    mixed = infer_images(server.grpc_url, [good, b"definitely not an image", good])
    problems = [p.decode() for p in mixed.as_numpy(io_names.ITEM_ERROR)]
    assert problems[0] == problems[2] == "" and problems[1].startswith("UNSUPPORTED_FORMAT:")
    assert mixed.as_numpy(io_names.SCORE)[0] == pytest.approx(mixed.as_numpy(io_names.SCORE)[2], abs=1e-5)
    alone = infer_images(server.grpc_url, [good])
    assert alone.as_numpy(io_names.SCORE)[0] == pytest.approx(mixed.as_numpy(io_names.SCORE)[0], abs=1e-4)


def test_dynamic_batching_merges_concurrent_requests(server, livec_dev):
    blob = (livec_dev / "images" / SAMPLES[1]).read_bytes()
    client = grpcclient.InferenceServerClient(server.grpc_url)
    before = client.get_inference_statistics(io_names.STUDENT_MODEL, as_json=True)["model_stats"][0]
    errors = []

    def worker():
        try:
            for _ in range(3):
                infer_images(server.grpc_url, [blob])
        except Exception as e:  # collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    # Triton updates statistics just after responding: let the counters settle (up to 5 s).
    deadline = time.time() + 5
    while True:
        after = client.get_inference_statistics(io_names.STUDENT_MODEL, as_json=True)["model_stats"][0]
        crops = int(after.get("inference_count", 0)) - int(before.get("inference_count", 0))
        if crops >= 36 * 9 or time.time() > deadline:
            break
        time.sleep(0.1)
    executions = int(after.get("execution_count", 0)) - int(before.get("execution_count", 0))
    assert crops == 36 * 9  # 36 requests x one image x 9 crops
    # Without dynamic batching each request is one execution of 9 crops; merging means fewer.
    assert executions < 36, (executions, after.get("batch_stats"))
    assert max(int(b["batch_size"]) for b in after["batch_stats"]) > 9


def test_generator_refuses_missing_artifacts(tmp_path, repo):
    with pytest.raises(triton_repo.MissingArtifact, match="to_onnx.py"):
        triton_repo.write_repository("cpu-ngc", BUNDLE, tmp_path / "r", repo / "bank.safetensors", onnx=tmp_path / "none.onnx")
    with pytest.raises(triton_repo.MissingArtifact, match="build_engine.py"):
        triton_repo.write_repository("gpu-ngc", BUNDLE, tmp_path / "r", repo / "bank.safetensors")
    with pytest.raises(triton_repo.MissingArtifact, match="build_bank.py"):
        triton_repo.write_repository("cpu-pip", BUNDLE, tmp_path / "r", tmp_path / "nobank.safetensors")
    r = run_script("export/triton_repo.py", "--target", "cpu-pip", "--checkpoint", BUNDLE, "--bank",
                   tmp_path / "nobank.safetensors", "--onnx", tmp_path / "x.onnx", "--out", tmp_path / "r")
    assert r.returncode == 2 and r.stderr.startswith("error:") and "Traceback" not in r.stderr


def test_ngc_targets_from_the_same_source(tmp_path, repo, exported):
    bank = repo / "bank.safetensors"
    plan = tmp_path / "student.plan"
    r = run_script("export/build_engine.py", "--backend", "tensorrt-rtx", "--compute-capability", "8.9",
                   "--onnx", exported / "qfm_student_fp16.onnx", "--engine", plan, "--max-batch", "128")
    assert r.returncode == 0, r.stderr[-2000:]
    triton_repo.write_repository("gpu-ngc", BUNDLE, tmp_path / "gpu", bank, plan=plan)
    triton_repo.write_repository("cpu-ngc", BUNDLE, tmp_path / "cpu", bank, onnx=exported / "qfm_student_fp32.onnx")
    gpu = (tmp_path / "gpu" / io_names.STUDENT_MODEL / "config.pbtxt").read_text()
    assert 'platform: "tensorrt_plan"' in gpu and "TYPE_FP16" in gpu and "KIND_GPU" in gpu
    assert "reshape: { shape: [  ] }" in gpu and (tmp_path / "gpu" / io_names.STUDENT_MODEL / "1" / "model.plan").exists()
    assert '"crop_dtype" value: { string_value: "FP16" }' in (tmp_path / "gpu" / io_names.SCORE_MODEL / "config.pbtxt").read_text()
    cpu = (tmp_path / "cpu" / io_names.STUDENT_MODEL / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in cpu and "TYPE_UINT8" in cpu
    assert '"crop_dtype" value: { string_value: "UINT8" }' in (tmp_path / "cpu" / io_names.SCORE_MODEL / "config.pbtxt").read_text()
    # The native-backend matcher has the bank baked in and must agree with the Python-backend one.
    baked = ort.InferenceSession(str(tmp_path / "cpu" / io_names.MATCH_MODEL / "1" / "match.onnx"))
    free = ort.InferenceSession(str(repo / "repo" / io_names.MATCH_MODEL / "1" / "match.onnx"))
    b = load_bank(bank)
    q = b["embeddings"][:6] + 0.01
    ids, scores = baked.run([io_names.NEIGHBOR_IDS, io_names.NEIGHBOR_SCORES], {io_names.MATCH_QUERY: q})
    _, idx = free.run(None, {io_names.MATCH_QUERY: q, io_names.MATCH_BANK: b["embeddings"]})
    assert np.array_equal(ids, b["ids"][idx]) and np.array_equal(scores, b["scores"][idx])


def test_committed_configs_are_what_the_generator_writes(tmp_path, repo, exported):
    triton_repo.write_repository("cpu-pip", BUNDLE, tmp_path / "fresh", repo / "bank.safetensors",
                                 onnx=exported / "qfm_student_fp32.onnx")
    for model in io_names.MODELS:
        committed = (REPO / "triton_repo" / model / "config.pbtxt").read_text()
        assert committed == (tmp_path / "fresh" / model / "config.pbtxt").read_text(), model


def test_golden_scores_at_every_stage(server, exported):
    """CI's guard of the bundled model: ten fixture images scored by PyTorch, ONNX Runtime FP32 and
    FP16, and the served ensemble, against tests/golden_scores.csv (tests/golden.py writes it)."""
    import golden
    expected = golden.read()
    assert list(expected) == golden.ITEMS
    got = golden.offline_scores(exported)
    got["served"] = golden.served_scores(server.grpc_url)
    for stage in golden.STAGES:
        want = np.array([expected[i][stage] for i in golden.ITEMS])
        worst = float(np.abs(got[stage] - want).max())
        assert worst <= golden.TOLERANCE[stage], f"{stage}: scores moved by up to {worst:.4f} (tolerance " \
            f"{golden.TOLERANCE[stage]}); if the model was changed on purpose, rerun `python tests/golden.py`"


def _livec_photos(livec_dev, n):
    paths = sorted(p for p in (livec_dev / "images").iterdir() if p.suffix.lower() in (".jpg", ".png", ".bmp"))
    assert len(paths) >= n
    return [p.read_bytes() for p in paths[:n]]


def test_a_request_far_over_the_student_batch_is_scored(server, livec_dev):
    """120 LIVEC photographs x 9 crops = 1080 crops in one stock tritonclient request, over the
    student's max_batch_size (512): qfm_score sends them in chunks, and an image scores the same
    whichever chunk it lands in (images 50..61 straddle the first boundary, at 56 images)."""
    blobs = _livec_photos(livec_dev, 120)
    big = infer_images(server.grpc_url, blobs, timeout=900)
    scores = big.as_numpy(io_names.SCORE)
    assert scores.shape == (120,) and np.isfinite(scores).all()
    assert not any(big.as_numpy(io_names.ITEM_ERROR)) and big.as_numpy(io_names.NEIGHBOR_IDS).shape == (120, 5)
    part = infer_images(server.grpc_url, blobs[50:62])
    np.testing.assert_allclose(scores[50:62], part.as_numpy(io_names.SCORE), atol=1e-4)
    np.testing.assert_allclose(big.as_numpy(io_names.EMBEDDING)[50:62], part.as_numpy(io_names.EMBEDDING), atol=1e-5)


def test_a_request_of_300_photographs_is_scored(fast_server, livec_dev):
    """300 photographs in one stock tritonclient request, on the shared fast server (one crop per
    image, chunks of 64 crops: five BLS chunks), each scored as it is alone."""
    blobs = _livec_photos(livec_dev, 300)
    big = infer_images(fast_server.grpc_url, blobs, timeout=900)
    scores = big.as_numpy(io_names.SCORE)
    assert scores.shape == (300,) and np.isfinite(scores).all() and not any(big.as_numpy(io_names.ITEM_ERROR))
    part = infer_images(fast_server.grpc_url, blobs[60:70])   # straddles the first chunk boundary
    np.testing.assert_allclose(scores[60:70], part.as_numpy(io_names.SCORE), atol=1e-4)


def test_over_the_request_limit_is_refused_with_the_limit(server):
    """The documented limit is served; one more image is refused by the first step with
    INVALID_ARG naming the limit, and no internal batch size leaks into the message."""
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(buf, format="PNG")   # one crop each
    limit = RequestLimits().max_images
    ok = infer_images(server.grpc_url, [buf.getvalue()] * limit, timeout=600)
    assert np.isfinite(ok.as_numpy(io_names.SCORE)).all() and len(ok.as_numpy(io_names.SCORE)) == limit
    with pytest.raises(InferenceServerException) as refused:
        infer_images(server.grpc_url, [buf.getvalue()] * (limit + 1))
    message = str(refused.value)
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT", message
    assert f"{limit + 1} images" in message and f"at most {limit} per request" in message and "split" in message
    assert "batch-size" not in message and io_names.STUDENT_MODEL not in message


def test_bank_of_another_student_or_plan_is_refused(tmp_path, repo, exported, foreign_bank, fast_repo):
    """A bank is the embedding space of one student with one crop plan: the repository writer
    refuses a bank built by another student, and one built with another plan (the fast
    repository's: the same weights on one crop per image), naming both."""
    onnx = exported / "qfm_student_fp32.onnx"
    ours = triton_repo.write_repository("cpu-pip", BUNDLE, tmp_path / "ok", repo / "bank.safetensors", onnx=onnx)
    with pytest.raises(BankMismatch) as foreign:
        triton_repo.write_repository("cpu-pip", BUNDLE, tmp_path / "r1", foreign_bank, onnx=onnx)
    other_sha = load_bank(foreign_bank)["meta"]["student_sha256"]
    assert other_sha != ours["student_sha256"]
    assert other_sha[:16] in str(foreign.value) and ours["student_sha256"][:16] in str(foreign.value)
    grid1_bank = fast_repo / io_names.MATCH_MODEL / "1" / "bank.safetensors"
    assert load_bank(grid1_bank)["meta"]["student_sha256"] == ours["student_sha256"]
    with pytest.raises(BankMismatch, match="1x1 crops.*but repository.*3x3 crops"):
        triton_repo.write_repository("cpu-pip", BUNDLE, tmp_path / "r2", grid1_bank, onnx=onnx)
    r = run_script("export/triton_repo.py", "--target", "cpu-pip", "--checkpoint", BUNDLE, "--bank", foreign_bank,
                   "--onnx", onnx, "--out", tmp_path / "r3")
    assert r.returncode == 2 and "was built by student" in r.stderr and "Traceback" not in r.stderr
