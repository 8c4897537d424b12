"""Synchronous client: `QFMClient("localhost:8001").score(["a.jpg", "b.png"])`."""
from __future__ import annotations

import time

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from qfm_client import errors, protocol
from qfm_client.inputs import item_name
from qfm_client.session import Session
from qfm_client.types import ScoreResult


class QFMClient(Session):
    """Blocking client over one or more Triton gRPC endpoints ("host:port").

    Batches items into requests of `batch_size` images, retries transient failures with
    exponential backoff (switching endpoints), checks each endpoint's model signature once, and
    isolates undecodable images so that one bad item never fails its batch: every item gets a
    ScoreResult, with a score or an error code. Every call waits at most `timeout` seconds.
    """

    def __init__(self, urls, **kwargs):
        super().__init__(urls, **kwargs)
        self._clients = {u: grpcclient.InferenceServerClient(u) for u in self.pool.urls}

    def health(self) -> dict:
        out = {}
        for url, c in self._clients.items():
            try:
                out[url] = self.health_entry(c.is_server_live(client_timeout=self.timeout),
                                             c.is_server_ready(client_timeout=self.timeout),
                                             c.is_model_ready(protocol.MODEL, client_timeout=self.timeout))
            except InferenceServerException as e:
                out[url] = self.health_error(e)
        return out

    def _infer(self, blobs: list[bytes], names: list[str]) -> list[ScoreResult]:
        """One request with retries; raises for non-transient errors."""
        attempts = self.attempts()
        while True:
            with self.pool.use(attempts.avoid) as url:
                try:
                    client = self._clients[url]
                    if self.needs_check(url):
                        self.checked(url, client.get_model_metadata(protocol.MODEL, as_json=True,
                                                                    client_timeout=self.timeout))
                    inputs, outputs = protocol.build_request(grpcclient, blobs, bool(self.neighbors))
                    result = client.infer(protocol.MODEL, inputs, outputs=outputs, client_timeout=self.timeout)
                    return protocol.parse_result(result, names, self.neighbors, url)
                except InferenceServerException as e:
                    delay = attempts.failed(url, e)
            time.sleep(delay)

    def _score_chunk(self, chunk: list[tuple[str, bytes]]) -> list[ScoreResult]:
        names, blobs = [n for n, _ in chunk], [b for _, b in chunk]
        try:
            return self._infer(blobs, names)
        except (errors.ServerUnavailable, InferenceServerException) as e:
            results = self.chunk_failure(names, e)
            if results is not None:
                return results
            mid = len(chunk) // 2
            return self._score_chunk(chunk[:mid]) + self._score_chunk(chunk[mid:])

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
