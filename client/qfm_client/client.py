"""Synchronous client: `QFMClient("localhost:8001").score(["a.jpg", "b.png"])`."""
from __future__ import annotations

import time

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from qfm_client import errors, protocol
from qfm_client.endpoints import EndpointPool, backoff_delays
from qfm_client.inputs import DEFAULT_MAX_BYTES, DEFAULT_MAX_REQUEST_BYTES, item_name, sniff_format, to_bytes
from qfm_client.types import ScoreResult


class _Core:
    """Settings and item preparation shared by the sync and async clients."""

    def __init__(self, urls, timeout: float = 60.0, retries: int = 5, backoff: float = 0.2, max_backoff: float = 5.0,
                 batch_size: int = 8, policy: str = "least_outstanding", max_bytes: int = DEFAULT_MAX_BYTES,
                 neighbors: int = 0, retry_for: float | None = None,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES):
        self.pool = EndpointPool(urls, policy)
        self.timeout, self.retries, self.backoff, self.max_backoff = timeout, retries, backoff, max_backoff
        self.batch_size, self.max_bytes, self.neighbors = max(1, batch_size), max_bytes, neighbors
        self.retry_for, self.max_request_bytes = retry_for, max(max_request_bytes, max_bytes)

    def prepare(self, items, offset: int = 0) -> tuple[list[tuple[str, bytes]], list[ScoreResult]]:
        """(name, bytes) to send, and results for items that fail before sending."""
        ready, failed = [], []
        for i, item in enumerate(items):
            name = item_name(item, offset + i)
            try:
                data = to_bytes(item)
            except OSError as e:
                failed.append(ScoreResult(name, error_code=errors.UNREADABLE, error=str(e)))
                continue
            if len(data) > self.max_bytes:
                failed.append(ScoreResult(name, error_code=errors.TOO_LARGE,
                                          error=f"{len(data)} bytes > limit {self.max_bytes}"))
            elif not data:
                failed.append(ScoreResult(name, error_code=errors.INVALID_IMAGE, error="empty file"))
            elif sniff_format(data) is None:   # never send what the server's allow-list refuses
                failed.append(ScoreResult(name, error_code=errors.UNSUPPORTED_FORMAT,
                                          error="not a JPEG, PNG, WebP, BMP, TIFF or GIF file"))
            else:
                ready.append((name, data))
        return ready, failed

    def chunks(self, ready):
        """Requests of at most batch_size images and max_request_bytes (the server's cap is 256 MiB)."""
        out, cur, size = [], [], 0
        for name, data in ready:
            if cur and (len(cur) == self.batch_size or size + len(data) > self.max_request_bytes):
                out.append(cur)
                cur, size = [], 0
            cur.append((name, data))
            size += len(data)
        return out + ([cur] if cur else [])

    def delays(self):
        return backoff_delays(self.retries, self.backoff, self.max_backoff, retry_for=self.retry_for)


class QFMClient(_Core):
    """Blocking client over one or more Triton gRPC endpoints ("host:port").

    Batches items into requests of `batch_size` images, retries transient failures with
    exponential backoff (switching endpoints), and isolates undecodable images so that one bad
    item never fails its batch: every item gets a ScoreResult, with a score or an error code.
    """

    def __init__(self, urls, **kwargs):
        super().__init__(urls, **kwargs)
        self._clients = {u: grpcclient.InferenceServerClient(u) for u in self.pool.urls}
        self._checked: set[str] = set()

    def health(self) -> dict:
        out = {}
        for url, c in self._clients.items():
            try:
                out[url] = {"live": c.is_server_live(client_timeout=self.timeout),
                            "ready": c.is_server_ready(client_timeout=self.timeout),
                            "model_ready": c.is_model_ready(protocol.MODEL, client_timeout=self.timeout)}
            except InferenceServerException as e:
                out[url] = {"live": False, "ready": False, "model_ready": False, "error": str(e)}
        return out

    def _check_model(self, url: str) -> None:
        """Validate the served model's signature once per endpoint (tritonclient examples' habit)."""
        if url in self._checked:
            return
        meta = self._clients[url].get_model_metadata(protocol.MODEL, as_json=True, client_timeout=self.timeout)
        inputs = {i["name"]: i["datatype"] for i in meta["inputs"]}
        outputs = {o["name"] for o in meta["outputs"]}
        if inputs.get(protocol.INPUT) != "BYTES" or protocol.SCORE not in outputs:
            raise errors.ModelNotReady(f"{url}: {protocol.MODEL} has inputs {inputs}, outputs {sorted(outputs)}")
        self._checked.add(url)

    def _infer(self, blobs: list[bytes], names: list[str]) -> list[ScoreResult]:
        """One request with retries; raises InferenceServerException for non-transient errors."""
        avoid: set = set()
        delays = self.delays()
        while True:
            with self.pool.use(avoid) as url:
                try:
                    self._check_model(url)
                    inputs, outputs = protocol.build_request(grpcclient, blobs, bool(self.neighbors))
                    result = self._clients[url].infer(protocol.MODEL, inputs, outputs=outputs,
                                                      client_timeout=self.timeout)
                    return protocol.parse_result(result, names, self.neighbors, url)
                except InferenceServerException as e:
                    if protocol.classify(e) != "retry":
                        raise
                    avoid.add(url)
                    err = e
            delay = next(delays, None)
            if delay is None:
                raise errors.ServerUnavailable(f"no endpoint answered after {self.retries} retries: {err}")
            time.sleep(delay)

    def _score_chunk(self, chunk: list[tuple[str, bytes]]) -> list[ScoreResult]:
        names, blobs = [n for n, _ in chunk], [b for _, b in chunk]
        try:
            return self._infer(blobs, names)
        except errors.ServerUnavailable as e:
            return [ScoreResult(n, error_code=errors.UNAVAILABLE, error=str(e)) for n in names]
        except InferenceServerException as e:
            kind = protocol.classify(e)
            if kind == "invalid" and len(chunk) > 1:  # bisect to find the bad image(s)
                mid = len(chunk) // 2
                return self._score_chunk(chunk[:mid]) + self._score_chunk(chunk[mid:])
            code = errors.INVALID_IMAGE if kind == "invalid" else errors.SERVER_ERROR
            return [ScoreResult(n, error_code=code, error=str(e)) for n in names]

    def score(self, items, neighbors: int | None = None) -> list[ScoreResult]:
        """Scores for paths, bytes or PIL images, in input order (errors per item)."""
        items = list(items)
        if neighbors is not None:
            self.neighbors = neighbors
        ready, failed = self.prepare(items)
        results = {r.item: r for r in failed}
        for chunk in self.chunks(ready):
            for r in self._score_chunk(chunk):
                results[r.item] = r
        return [results[item_name(it, i)] for i, it in enumerate(items)]

    def close(self) -> None:
        for c in self._clients.values():
            c.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
