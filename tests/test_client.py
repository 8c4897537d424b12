"""The client SDK and `qfm-score` CLI against real Triton servers over gRPC."""
import asyncio
import io
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from PIL import Image

from conftest import REPO
from serving.triton_server import TritonServer
from qfm_client import AsyncQFMClient, QFMClient
from qfm_client import errors
from qfm_core import io_names

QFM_SCORE = [sys.executable, "-m", "qfm_client.cli"]


@pytest.fixture(scope="module")
def servers(fast_server, fast_repo):
    """Two replicas: the session's shared server and one more (the multi-endpoint tests)."""
    with TritonServer(fast_repo) as b:
        yield fast_server, b


def _png(seed: int, size: int = 224) -> bytes:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, size)[None, :, None] * np.ones((size, 1, 3))
    img = np.clip(base + rng.normal(0, 4 + seed % 40, (size, size, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    for i in range(1000):
        sub = d / f"part{i % 4}"
        sub.mkdir(exist_ok=True)
        (sub / f"img{i:04d}.png").write_bytes(_png(i))
    return d


def test_sdk_accepts_paths_bytes_and_pil(servers, image_dir):
    path = image_dir / "part1" / "img0001.png"
    with QFMClient(servers[0].grpc_url, neighbors=3) as client:
        health = client.health()[servers[0].grpc_url]
        assert health["ready"] and health["model_ready"]
        pil = Image.open(path)
        results = client.score([path, path.read_bytes(), pil])
    assert all(r.ok for r in results) and results[0].item == str(path) and results[1].item == "#1"
    assert results[0].score == pytest.approx(results[1].score, abs=1e-4)
    assert results[0].score == pytest.approx(results[2].score, abs=1e-4)  # PIL is re-encoded losslessly
    assert len(results[0].neighbors) == 3 and all(0 <= n.score <= 100 for n in results[0].neighbors)


def test_one_bad_image_never_fails_its_batch(servers, tmp_path, image_dir):
    good = [image_dir / "part0" / f"img{i:04d}.png" for i in (0, 4, 8)]
    (tmp_path / "garbage.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "truncated.png").write_bytes(good[0].read_bytes()[:200])
    items = [good[0], tmp_path / "garbage.jpg", good[1], tmp_path / "empty.png", tmp_path / "truncated.png",
             tmp_path / "missing.png", good[2]]
    with QFMClient(servers[0].grpc_url, batch_size=8, max_bytes=10_000_000) as client:
        results = client.score(items)
        alone = client.score(good)
    codes = [r.error_code for r in results]
    # empty and unreadable files are caught locally; the server names what is wrong with the others
    assert codes == [None, "CORRUPT", None, errors.INVALID_IMAGE, "CORRUPT", errors.UNREADABLE, None]
    assert [r.score for r in results if r.ok] == pytest.approx([r.score for r in alone], abs=1e-4)
    with QFMClient(servers[0].grpc_url, max_bytes=100) as client:
        assert client.score([good[0]])[0].error_code == errors.TOO_LARGE


def _success_counts(urls):
    return [int(grpcclient.InferenceServerClient(u).get_inference_statistics(io_names.ENSEMBLE, as_json=True)
                ["model_stats"][0].get("inference_stats", {}).get("success", {}).get("count", 0)) for u in urls]


@pytest.mark.parametrize("policy", ["round_robin", "least_outstanding"])
def test_two_servers_share_the_load(servers, image_dir, policy):
    urls = [s.grpc_url for s in servers]
    before = _success_counts(urls)
    paths = sorted((image_dir / "part2").glob("*.png"))[:40]

    async def go():
        async with AsyncQFMClient(urls, max_in_flight=4, batch_size=2, policy=policy) as client:
            return await client.score([str(p) for p in paths])

    results = asyncio.run(go())
    assert all(r.ok for r in results) and [r.item for r in results] == [str(p) for p in paths]
    assert {r.endpoint for r in results} == set(urls)
    # Counted by the servers themselves. Triton updates its statistics just after sending a
    # response, so give the counters up to 5 s to settle before asserting the exact total.
    deadline = time.time() + 5
    while True:
        served = [a - b for a, b in zip(_success_counts(urls), before)]
        if sum(served) >= 20 or time.time() > deadline:
            break
        time.sleep(0.1)
    assert sum(served) == 20, served  # 20 requests of 2 images
    if policy == "round_robin":
        assert served == [10, 10]
    else:  # the faster replica takes more, but both work
        assert min(served) >= 1, served


def test_async_client_bounds_requests_in_flight(servers, image_dir):
    paths = sorted((image_dir / "part3").glob("*.png"))[:48]
    peak = []

    async def go():
        async with AsyncQFMClient([servers[0].grpc_url], max_in_flight=3, batch_size=2) as client:
            original = client.pool.pick

            def pick(avoid=None):
                url = original(avoid)
                peak.append(client.pool.outstanding[url])
                return url

            client.pool.pick = pick
            return await client.score([str(p) for p in paths])

    results = asyncio.run(go())
    assert len(results) == 48 and all(r.ok for r in results)
    assert max(peak) <= 3


def test_unreachable_server_is_reported_not_hidden(tmp_path):
    from serving.triton_server import free_port

    url = f"127.0.0.1:{free_port()}"
    with QFMClient(url, retries=2, backoff=0.01, max_backoff=0.05, timeout=2) as client:
        r = client.score([_png(1)])[0]
    assert r.error_code == errors.UNAVAILABLE
    (tmp_path / "a.png").write_bytes(_png(2))
    p = subprocess.run(QFM_SCORE + [str(tmp_path / "a.png"), "--url", url, "--out", str(tmp_path / "o.jsonl"),
                                    "--retries", "1", "--timeout", "2"], capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 3 and "rerun with --resume" in p.stderr and f"no Triton server answers at {url}" in p.stderr
    assert (tmp_path / "o.jsonl").read_text() == ""  # nothing recorded for unscored items


@pytest.mark.slow
def test_cli_job_interrupted_and_resumed_scores_every_item_once(servers, image_dir, tmp_path):
    out = tmp_path / "results.jsonl"
    # One small request at a time, so the job is still running when the test interrupts it.
    def cmd(concurrency, batch):
        return QFM_SCORE + [str(image_dir), "--url", servers[0].grpc_url, "--url", servers[1].grpc_url,
                            "--out", str(out), "--concurrency", str(concurrency), "--batch-size", str(batch)]

    # A shell without job control starts background commands with SIGINT ignored, and children
    # inherit that (seen: a CI run launched with `&` never interrupted the job); a terminal's
    # Ctrl-C is what this test stands for, so the child gets the default disposition back.
    proc = subprocess.Popen(cmd(1, 2), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 200):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)  # Ctrl-C in the middle of the job
    _, err = proc.communicate(timeout=60)
    first = out.read_text().count("\n")
    assert proc.returncode == 130 and 200 <= first < 1000, (proc.returncode, first, err[-500:])
    p = subprocess.run(QFM_SCORE[:3] + [str(image_dir), "--url", servers[0].grpc_url, "--out", str(out)],
                       cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 2 and "--resume" in p.stderr  # refuses to clobber without --resume
    p = subprocess.run(cmd(4, 4) + ["--resume", "--histogram", str(tmp_path / "hist.png")], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    items = [r["item"] for r in records]
    assert len(records) == 1000 and len(set(items)) == 1000
    assert all(r.get("error_code") is None and np.isfinite(r["score"]) for r in records)
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["skipped_resume"] == first and summary["scored"] == 1000 - first
    assert (tmp_path / "hist.png").stat().st_size > 1000


def test_settings_the_server_would_refuse_are_refused_up_front(tmp_path):
    """Requests over the server's image limit and calls without a deadline never leave the client;
    an endpoint serving another signature is refused by name, not misread."""
    from qfm_client import protocol
    from qfm_core import io_names
    from qfm_core.image_guard import RequestLimits

    limit = RequestLimits().max_images
    with pytest.raises(ValueError, match=f"1..{limit}"):
        QFMClient("127.0.0.1:1", batch_size=limit + 1)
    with pytest.raises(ValueError, match="timeout"):
        QFMClient("127.0.0.1:1", timeout=0)
    (tmp_path / "a.png").write_bytes(_png(3))
    p = subprocess.run(QFM_SCORE + [str(tmp_path / "a.png"), "--url", "127.0.0.1:1", "--out", str(tmp_path / "o.jsonl"),
                                    "--batch-size", str(limit + 1)], capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 2 and f"--batch-size must be 1..{limit}" in p.stderr and not (tmp_path / "o.jsonl").exists()
    meta = {"inputs": [{"name": io_names.IMAGE, "datatype": "BYTES"}],
            "outputs": [{"name": n} for n in io_names.SCORE_OUTPUTS + io_names.NEIGHBOR_OUTPUTS]}
    protocol.check_metadata(meta, "u")   # the served signature passes
    meta["outputs"] = [o for o in meta["outputs"] if o["name"] != io_names.ITEM_ERROR]
    with pytest.raises(errors.ModelNotReady, match=io_names.ITEM_ERROR):
        protocol.check_metadata(meta, "u")
