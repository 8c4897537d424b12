"""Hostile inputs, load and faults against the real server (issue: reliability and security).

- every file of a generated hostile corpus (tests/hostile_images.py, 59 cases) gets a score or
  its own error code, through raw gRPC and through the SDK, and the server keeps serving;
- 64 concurrent clients for 60 s on loopback: zero failed requests, p99 reported, bounded
  server memory growth (QFM_LOAD_SECONDS changes the duration; `-m soak` runs 10 minutes);
- the server SIGKILLed and restarted during a `qfm-score` job: the job completes, every item
  exactly once; a damaged artifact: a clear load error while the other models keep serving.
"""
import asyncio
import json
import math
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aiogrpc
from tritonclient.utils import InferenceServerException

from conftest import REPO, infer_images
from serving.triton_server import TritonServer, free_port
from hostile_images import corpus, matches
from qfm_client import QFMClient
from qfm_core.image_guard import ImageRejected, decode_untrusted
from qfm_core import io_names
from qfm_core.image_guard import RequestLimits

CORPUS = corpus()


@pytest.fixture(scope="module")
def server(fast_server):
    """The session's shared server on the fast repository (ONNX Runtime's CPU arena off there, so
    RSS growth under load is our code's, not the arena's); these tests only read from it."""
    return fast_server


def _infer(url, blobs):
    return infer_images(url, blobs, outputs=(io_names.SCORE, io_names.EMBEDDING, io_names.ITEM_ERROR), timeout=300)


def test_image_guard_gives_every_corpus_case_its_outcome():
    assert len(CORPUS) >= 40
    for name, data, expected in CORPUS:
        try:
            rgb, code = decode_untrusted(data), None
            assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3, name
        except ImageRejected as e:
            code = e.code
        assert matches(expected, code), f"{name}: expected {expected}, got {code or 'ok'}"
    by_name = {n: d for n, d, _ in CORPUS}
    assert decode_untrusted(by_name["jpeg_exif_rotated_90"]).shape == (320, 240, 3)   # orientation 6 applied
    gray16 = decode_untrusted(by_name["png_16bit_gray"]).astype(float)
    gray8 = decode_untrusted(by_name["png_grayscale"]).astype(float)
    assert np.abs(gray16 - gray8).max() <= 1.0          # 16-bit scaled to 8, not clipped to white
    alpha = decode_untrusted(by_name["png_rgba_alpha"])
    assert (alpha[:, 0] == 255).all()                   # fully transparent column composited on white


def test_hostile_corpus_through_the_real_server(server):
    outcomes = {}
    for start in range(0, len(CORPUS), 6):                # mixed batches: bad items next to good ones
        batch = CORPUS[start:start + 6]
        result = _infer(server.grpc_url, [d for _, d, _ in batch])
        scores, problems = result.as_numpy(io_names.SCORE), result.as_numpy(io_names.ITEM_ERROR)
        for (name, _, expected), score, problem in zip(batch, scores, problems):
            code = problem.decode().split(":")[0] if problem else None
            outcomes[name] = code
            assert matches(expected, code), f"{name}: expected {expected}, got {problem.decode() or 'a score'}"
            if code is None:
                assert 0.0 <= score <= 100.0 and math.isfinite(score), (name, score)
    assert len(outcomes) == len(CORPUS)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    assert client.is_server_ready() and client.is_model_ready(io_names.ENSEMBLE)
    ok = _infer(server.grpc_url, [dict((n, d) for n, d, _ in CORPUS)["jpeg_baseline"]])
    assert ok.as_numpy(io_names.ITEM_ERROR)[0] == b""


def test_request_over_the_server_cap_is_refused_whole(server):
    jpeg = dict((n, d) for n, d, _ in CORPUS)["over_byte_limit"]
    with pytest.raises(InferenceServerException, match=f"at most {RequestLimits().max_bytes} per request: split"):
        _infer(server.grpc_url, [jpeg] * 9)             # 9 x 32 MiB > the 256 MiB request cap
    assert grpcclient.InferenceServerClient(server.grpc_url).is_model_ready(io_names.ENSEMBLE)


def test_hostile_corpus_through_the_sdk(server):
    with QFMClient(server.grpc_url, batch_size=5) as client:
        results = client.score([d for _, d, _ in CORPUS])
    for (name, _, expected), r in zip(CORPUS, results):
        if expected == "ok":
            assert r.ok and 0.0 <= r.score <= 100.0, (name, r)
        elif "ok" not in expected:
            assert not r.ok and r.error_code, (name, r)    # client-side or server-side code
    codes = {name: r.error_code for (name, _, _), r in zip(CORPUS, results)}
    assert codes["over_byte_limit"] == "TOO_LARGE" and codes["pdf"] == "UNSUPPORTED_FORMAT"   # never sent
    assert codes["bomb_png_4gp_header"] == "TOO_MANY_PIXELS" and codes["size_1x1"] == "TOO_SMALL"   # server's


async def _load(url: str, clients: int, seconds: float, blobs: list[bytes]) -> dict:
    latencies, failures = [], []
    deadline = time.monotonic() + seconds

    async def one_client(i: int):
        c = aiogrpc.InferenceServerClient(url)
        try:
            while time.monotonic() < deadline:
                inp = aiogrpc.InferInput(io_names.IMAGE, [1], "BYTES")
                inp.set_data_from_numpy(np.array([blobs[i % len(blobs)]], dtype=object))
                t = time.perf_counter()
                try:
                    r = await c.infer(io_names.ENSEMBLE, [inp], outputs=[aiogrpc.InferRequestedOutput(o) for o in
                                                                (io_names.SCORE, io_names.EMBEDDING, io_names.ITEM_ERROR)],
                                      client_timeout=120)
                    if r.as_numpy(io_names.ITEM_ERROR)[0]:
                        failures.append(r.as_numpy(io_names.ITEM_ERROR)[0])
                    latencies.append(time.perf_counter() - t)
                except Exception as e:  # every failure is counted and reported
                    failures.append(repr(e))
        finally:
            await c.close()

    await asyncio.gather(*(one_client(i) for i in range(clients)))
    lat = np.array(latencies) * 1000
    return {"requests": len(latencies), "failed": len(failures), "failures": failures[:5],
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "images_per_s": len(latencies) / seconds}


def _load_test(server, livec_dev, seconds: float) -> dict:
    blobs = [p.read_bytes() for p in sorted((livec_dev / "images").glob("*"))[:16]]
    # Warm-up at full load: the backends' shared-memory pools and allocators reach their working size.
    asyncio.run(_load(server.grpc_url, 64, min(15.0, seconds / 4), blobs))
    rss_before = server.rss_bytes()
    stats = asyncio.run(_load(server.grpc_url, 64, seconds, blobs))
    stats["rss_before_mb"], stats["rss_after_mb"] = rss_before / 2**20, server.rss_bytes() / 2**20
    stats["rss_growth_mb"] = stats["rss_after_mb"] - stats["rss_before_mb"]
    out = REPO / "build" / "load_test.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"clients": 64, "seconds": seconds, **stats}, indent=2) + "\n")
    print(f"\nload: 64 clients x {seconds:.0f} s: {stats['requests']} requests, {stats['failed']} failed, "
          f"p50 {stats['p50_ms']:.0f} ms, p99 {stats['p99_ms']:.0f} ms, {stats['images_per_s']:.1f} img/s, "
          f"server RSS {stats['rss_before_mb']:.0f} -> {stats['rss_after_mb']:.0f} MB")
    return stats


@pytest.mark.slow
def test_64_clients_for_60_seconds_lose_nothing(server, livec_dev):
    stats = _load_test(server, livec_dev, float(os.environ.get("QFM_LOAD_SECONDS", "60")))
    assert stats["failed"] == 0, stats["failures"]
    assert stats["requests"] >= 64                       # every client completed requests
    # Bounded growth: after warm-up, a minute of traffic may not grow the server by more than
    # half its size or 800 MB, whichever is larger. Seen even with the arena off: +0.2 to +0.54 GB
    # in the first minutes (allocator and shared-memory pools; a 150 s probe showed it level off),
    # so this catches leaks of a request's order (0.6 MB of crops x the 2000-6000 requests of a
    # minute here = 1.2-3.6 GB), not small drifts: the soak variant is for those.
    assert stats["rss_growth_mb"] <= max(800.0, 0.5 * stats["rss_before_mb"]), stats


@pytest.mark.soak
def test_soak_ten_minutes(server, livec_dev):
    stats = _load_test(server, livec_dev, 600.0)
    assert stats["failed"] == 0 and stats["rss_growth_mb"] <= max(800.0, 0.5 * stats["rss_before_mb"]), stats


@pytest.mark.slow
def test_server_killed_and_restarted_during_a_job(fast_repo, tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    rng = np.random.default_rng(0)
    from PIL import Image
    for i in range(240):
        base = np.linspace(0, 255, 96)[None, :, None] * np.ones((96, 1, 3))
        img = np.clip(base + rng.normal(0, 5 + i % 30, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(images / f"img{i:03d}.png")
    port = free_port()
    srv = TritonServer(fast_repo, grpc_port=port).start()
    out = tmp_path / "scores.jsonl"
    job = subprocess.Popen([sys.executable, "-m", "qfm_client.cli", str(images), "--url", srv.grpc_url,
                            "--out", str(out), "--batch-size", "2", "--concurrency", "2", "--retry-for", "240"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while (not out.exists() or len(out.read_text().splitlines()) < 40) and time.time() < deadline:
            time.sleep(0.2)
        assert job.poll() is None, "the job finished before the crash could be staged"
        srv.kill()                                           # a crash: no graceful shutdown
        lines_at_kill = len(out.read_text().splitlines())
        time.sleep(2)
        srv = TritonServer(fast_repo, grpc_port=port).start()
        stdout, stderr = job.communicate(timeout=400)
    finally:
        if job.poll() is None:
            job.kill()
        srv.stop()
    assert job.returncode == 0, stderr[-2000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    items = [r["item"] for r in records]
    assert len(items) == len(set(items)) == 240, (len(items), len(set(items)))
    assert all(r["error_code"] is None for r in records)
    assert lines_at_kill < 240                               # the crash really happened mid-job
    assert json.loads(stdout.strip().splitlines()[-1])["scored"] == 240


@pytest.mark.slow
def test_damaged_artifact_is_a_clear_load_error_while_others_serve(fast_repo, foreign_bank, tmp_path, livec_dev):
    repo = tmp_path / "repo"
    shutil.copytree(fast_repo, repo)
    with TritonServer(repo) as srv:
        client = grpcclient.InferenceServerClient(srv.grpc_url)
        bank = repo / io_names.MATCH_MODEL / "1" / "bank.safetensors"
        bank.write_bytes(b"\x00\x01 this is not a safetensors file")
        with pytest.raises(InferenceServerException, match="bank.*not a readable safetensors"):
            client.load_model(io_names.MATCH_MODEL)
        (repo / io_names.MATCH_MODEL / "1" / "match.onnx").unlink()
        shutil.copyfile(fast_repo / io_names.MATCH_MODEL / "1" / "bank.safetensors", bank)
        with pytest.raises(InferenceServerException, match="match.onnx is missing"):
            client.load_model(io_names.MATCH_MODEL)
        # a bank built by another student is refused when the model loads, naming both students
        shutil.copyfile(fast_repo / io_names.MATCH_MODEL / "1" / "match.onnx", repo / io_names.MATCH_MODEL / "1" / "match.onnx")
        shutil.copyfile(foreign_bank, bank)
        with pytest.raises(InferenceServerException, match=f"was built by student .* but model {io_names.MATCH_MODEL} serves"):
            client.load_model(io_names.MATCH_MODEL)
        # the student and the scoring model never noticed
        crops = np.zeros((2, 3, 224, 224), np.uint8)   # the CPU student takes raw pixels
        inp = grpcclient.InferInput(io_names.CROPS, list(crops.shape), "UINT8")
        inp.set_data_from_numpy(crops)
        scores = client.infer(io_names.STUDENT_MODEL, [inp]).as_numpy(io_names.CROP_SCORES)
        assert scores.shape[0] == 2 and np.isfinite(scores).all()
        img = grpcclient.InferInput(io_names.IMAGE, [1], "BYTES")
        img.set_data_from_numpy(np.array([(livec_dev / "images" / "100.png").read_bytes()], dtype=object))
        answer = client.infer(io_names.SCORE_MODEL, [img])
        assert np.isfinite(answer.as_numpy(io_names.SCORE)).all() and answer.as_numpy(io_names.ITEM_ERROR).tolist() == [b""]
