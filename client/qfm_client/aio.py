"""Asynchronous client on tritonclient's asyncio gRPC API, with a bound on requests in flight.

    async with AsyncQFMClient(["host1:8001", "host2:8001"], max_in_flight=16) as client:
        async for result in client.score_iter(paths):
            ...
"""
from __future__ import annotations

import asyncio

import tritonclient.grpc.aio as aiogrpc
from tritonclient.utils import InferenceServerException

from qfm_client import errors, protocol
from qfm_client.inputs import item_name
from qfm_client.session import Session
from qfm_client.types import ScoreResult


class AsyncQFMClient(Session):
    """The same client as QFMClient (qfm_client.session: retries, signature check, timeouts),
    awaited, with at most `max_in_flight` requests outstanding."""

    def __init__(self, urls, max_in_flight: int = 8, **kwargs):
        super().__init__(urls, **kwargs)
        self.max_in_flight = max(1, max_in_flight)
        self._clients: dict = {}

    async def __aenter__(self):
        self._clients = {u: aiogrpc.InferenceServerClient(u) for u in self.pool.urls}
        self._sem = asyncio.Semaphore(self.max_in_flight)
        return self

    async def __aexit__(self, *exc):
        for c in self._clients.values():
            await c.close()

    async def health(self) -> dict:
        out = {}
        for url, c in self._clients.items():
            try:
                out[url] = self.health_entry(await c.is_server_live(client_timeout=self.timeout),
                                             await c.is_server_ready(client_timeout=self.timeout),
                                             await c.is_model_ready(protocol.MODEL, client_timeout=self.timeout))
            except InferenceServerException as e:
                out[url] = self.health_error(e)
        return out

    async def _infer(self, blobs, names) -> list[ScoreResult]:
        attempts = self.attempts()
        while True:
            url = self.pool.pick(attempts.avoid)
            try:
                client = self._clients[url]
                if self.needs_check(url):
                    self.checked(url, await client.get_model_metadata(protocol.MODEL, as_json=True,
                                                                      client_timeout=self.timeout))
                inputs, outputs = protocol.build_request(aiogrpc, blobs, bool(self.neighbors))
                result = await client.infer(protocol.MODEL, inputs, outputs=outputs, client_timeout=self.timeout)
                return protocol.parse_result(result, names, self.neighbors, url)
            except InferenceServerException as e:
                delay = attempts.failed(url, e)
            finally:
                self.pool.release(url)
            await asyncio.sleep(delay)

    async def _score_chunk(self, chunk) -> list[ScoreResult]:
        names, blobs = [n for n, _ in chunk], [b for _, b in chunk]
        try:
            async with self._sem:
                return await self._infer(blobs, names)
        except (errors.ServerUnavailable, InferenceServerException) as e:
            results = self.chunk_failure(names, e)
            if results is not None:
                return results
            mid = len(chunk) // 2
            return await self._score_chunk(chunk[:mid]) + await self._score_chunk(chunk[mid:])

    async def score_iter(self, items):
        """Yield ScoreResults as requests complete (not in input order); at most
        `max_in_flight` requests are outstanding and at most twice that many are prepared."""
        items = list(items)
        pending: set = set()
        for start in range(0, len(items), self.batch_size):
            # reading files and objects blocks: a thread, so the requests in flight keep being served
            ready, failed = await asyncio.to_thread(self.prepare, items[start:start + self.batch_size], start)
            for r in failed:
                yield r
            if ready:
                pending.add(asyncio.ensure_future(self._score_chunk(ready)))
            if len(pending) >= 2 * self.max_in_flight:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    for r in task.result():
                        yield r
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                for r in task.result():
                    yield r

    async def score(self, items) -> list[ScoreResult]:
        items = list(items)
        results = {r.item: r async for r in self.score_iter(items)}
        return [results[item_name(it, i)] for i, it in enumerate(items)]
