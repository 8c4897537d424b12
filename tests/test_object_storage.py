"""Scoring straight from object storage, against a real S3 API on localhost (moto's server mode)
and the real Triton server: a prefix of LIVEC photographs with one broken object, the store
going away mid-job, --resume, Parquet results, and http:// and file:// URLs.

Between the client and moto sits a small TCP relay of our own (StoreLink) that can refuse and
drop connections on cue: it counts the object GETs it relays, so "the store goes away after
the 10th read" happens at the same point of the job however fast this machine is.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO
from qfm_client import QFMClient, list_items
from serving.triton_server import free_port

BUCKET = "qfm-photos"
PREFIX = "shoot-2026/livec"
PHOTOS = 30
QFM_SCORE = [sys.executable, "-m", "qfm_client.cli"]
CREDS = {"AWS_ACCESS_KEY_ID": "qfm-test", "AWS_SECRET_ACCESS_KEY": "qfm-test", "AWS_DEFAULT_REGION": "us-east-1"}


class StoreLink:
    """A TCP relay to the S3 server. `fail_after(n, seconds)`: after n more GET requests, drop every
    connection and refuse new ones for `seconds` (None: until restore())."""

    def __init__(self, target_port: int):
        self.target, self.port = ("127.0.0.1", target_port), free_port()
        self.gets, self._trip_at, self._down_for = 0, None, None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = None
        self.outages: list[tuple[float, float]] = []
        self._listen()

    def _listen(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self._listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def _accept(self, listener) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src, dst, from_client: bool) -> None:
        try:
            while data := src.recv(65536):
                if from_client and data.startswith(b"GET "):
                    self._count_get()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _count_get(self) -> None:
        with self._lock:
            self.gets += 1
            trip = self._trip_at is not None and self.gets >= self._trip_at
        if trip:
            self._trip_at = None
            self.cut()

    def fail_after(self, gets: int, seconds: float | None) -> None:
        self._trip_at, self._down_for = self.gets + gets, seconds

    def cut(self) -> None:
        with self._lock:
            self._listener.close()
            for s in self._conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self._conns = []
            self.outages.append((time.time(), float("nan")))
        if self._down_for is not None:
            threading.Timer(self._down_for, self.restore).start()

    def restore(self) -> None:
        self._listen()
        start, _ = self.outages[-1]
        self.outages[-1] = (start, time.time())

    def close(self) -> None:
        self._listener.close()


@pytest.fixture(scope="module")
def s3(tmp_path_factory, livec_dev):
    """moto's S3 server on a free localhost port, with PHOTOS LIVEC photographs under PREFIX, one
    broken JPEG (its first 3 KB), and a text file that the prefix listing leaves out."""
    import s3fs

    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, "moto_server did not start"
                time.sleep(0.2)
        os.environ.update(CREDS)
        fs = s3fs.S3FileSystem(endpoint_url=endpoint)
        fs.mkdir(BUCKET)
        photos = sorted((livec_dev / "images").glob("*.[jp][pn]g"))[:PHOTOS]
        for p in photos:
            fs.pipe_file(f"{BUCKET}/{PREFIX}/{p.name}", p.read_bytes())
        fs.pipe_file(f"{BUCKET}/{PREFIX}/broken.JPG", next(p for p in sorted((livec_dev / "images").glob("*.JPG")))
                     .read_bytes()[:3000])
        fs.pipe_file(f"{BUCKET}/{PREFIX}/notes.txt", b"not an image")
        yield {"endpoint": endpoint, "port": port, "photos": photos}
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture
def link(s3):
    relay = StoreLink(s3["port"])
    yield relay
    relay.close()


def _expected(fast_server, photos) -> dict:
    """The same photographs scored from local files on the same server."""
    with QFMClient(fast_server.grpc_url) as client:
        return {p.name: r.score for p, r in zip(photos, client.score(photos))}


def _job(out: Path, endpoint: str, url: str, *extra) -> subprocess.Popen:
    return subprocess.Popen([*QFM_SCORE, f"s3://{BUCKET}/{PREFIX}/", "--storage-option", f"endpoint_url={endpoint}",
                             "--url", url, "--out", str(out), "--batch-size", "2", "--concurrency", "2", *extra],
                            cwd=REPO, env={**os.environ, **CREDS}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_prefix_scored_to_parquet_through_a_store_outage(tmp_path, s3, link, fast_server):
    """The store drops every connection and refuses new ones for 4 s after the 10th GET: the job
    rides it out and finishes; every object is in the Parquet file exactly once, the broken one
    with its own error code, the others with the scores of the same files read locally."""
    import pyarrow.parquet as pq

    link.fail_after(10, seconds=4.0)
    job = _job(tmp_path / "scores.parquet", f"http://127.0.0.1:{link.port}", fast_server.grpc_url)
    stdout, stderr = job.communicate(timeout=300)
    assert job.returncode == 0, stderr[-3000:]
    (start, end), = link.outages
    assert end - start >= 3.9                                # the outage happened, mid-job, and ended
    rows = pq.read_table(tmp_path / "scores.parquet").to_pylist()
    items = [r["item"] for r in rows]
    names = [p.name for p in s3["photos"]] + ["broken.JPG"]
    assert sorted(items) == sorted(f"s3://{BUCKET}/{PREFIX}/{n}" for n in names)   # each once, no notes.txt
    by_name = {r["item"].rsplit("/", 1)[1]: r for r in rows}
    assert by_name["broken.JPG"]["error_code"] == "CORRUPT" and by_name["broken.JPG"]["score"] is None
    expected = _expected(fast_server, s3["photos"])
    for name, score in expected.items():
        assert by_name[name]["error_code"] is None and abs(by_name[name]["score"] - score) < 1e-4, name
    journal = (tmp_path / "scores.parquet.journal.jsonl").read_text().splitlines()
    assert len(journal) == len(names) and json.loads(stdout.strip().splitlines()[-1])["scored"] == PHOTOS


def test_store_away_too_long_stops_then_resume_scores_the_rest_once(tmp_path, s3, link, fast_server):
    """The store goes away after the 12th GET and stays away past --retry-for: the job stops with
    exit 3 and the --resume hint, having recorded only what it scored. Back, --resume scores the
    rest; every object is in the results exactly once."""
    out = tmp_path / "scores.jsonl"
    link.fail_after(12, seconds=None)
    job = _job(out, f"http://127.0.0.1:{link.port}", fast_server.grpc_url, "--retry-for", "3")
    _, stderr = job.communicate(timeout=300)
    assert job.returncode == 3, stderr[-3000:]
    assert "object storage did not answer" in stderr and "--resume" in stderr
    first = [json.loads(line)["item"] for line in out.read_text().splitlines()]
    assert 0 < len(first) < PHOTOS + 1

    link.restore()
    job = _job(out, f"http://127.0.0.1:{link.port}", fast_server.grpc_url, "--resume")
    stdout, stderr = job.communicate(timeout=300)
    assert job.returncode == 0, stderr[-3000:]
    items = [json.loads(line)["item"] for line in out.read_text().splitlines()]
    assert len(items) == len(set(items)) == PHOTOS + 1
    assert json.loads(stdout.strip().splitlines()[-1])["skipped_resume"] == len(first)


@pytest.fixture(scope="module")
def http_photos(livec_dev):
    """A plain HTTP server on localhost serving the LIVEC images folder."""
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(livec_dev / "images"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_sdk_reads_s3_http_and_file_urls(s3, fast_server, http_photos):
    """The SDK takes URLs as items: an S3 prefix through list_items, http:// and file:// URLs; a
    missing object or page is that item's UNREADABLE error, the others are scored."""
    opts = {"endpoint_url": s3["endpoint"]}
    listed = list_items([f"s3://{BUCKET}/{PREFIX}/"], opts)
    assert len(listed) == PHOTOS + 1 and not any(i.endswith(".txt") for i in listed)
    photo = s3["photos"][0]
    items = [f"s3://{BUCKET}/{PREFIX}/{photo.name}", f"{http_photos}/{photo.name}", photo.resolve().as_uri(),
             f"s3://{BUCKET}/{PREFIX}/missing.jpg", f"{http_photos}/missing.jpg"]
    with QFMClient(fast_server.grpc_url, storage_options=opts) as client:
        results = client.score(items)
    local = _expected(fast_server, [photo])[photo.name]
    assert [r.item for r in results] == items
    for r in results[:3]:
        assert r.ok and abs(r.score - local) < 1e-4, r
    for r in results[3:]:
        assert r.error_code == "UNREADABLE" and "missing.jpg" in r.error, r


def test_cli_refuses_a_prefix_that_does_not_exist(tmp_path, s3, fast_server):
    r = subprocess.run([*QFM_SCORE, f"s3://{BUCKET}/no-such-prefix/", "--storage-option",
                        f"endpoint_url={s3['endpoint']}", "--url", fast_server.grpc_url, "--out", str(tmp_path / "o.jsonl")],
                       cwd=REPO, env={**os.environ, **CREDS}, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([*QFM_SCORE, f"s3://{BUCKET}/{PREFIX}/", "--storage-option", "endpoint_url",
                        "--url", fast_server.grpc_url, "--out", str(tmp_path / "o.jsonl")],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "KEY=VALUE" in r.stderr
