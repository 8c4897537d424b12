"""What the sync and async clients share: settings, item preparation, request chunking, the
retry policy, the once-per-endpoint signature check and the per-chunk error handling. The two
clients differ only in how they wait (time.sleep / asyncio.sleep, blocking / awaited calls)."""
from __future__ import annotations

import os

from qfm_client import errors, protocol
from qfm_client.endpoints import EndpointPool, backoff_delays
from qfm_client.inputs import DEFAULT_MAX_BYTES, DEFAULT_MAX_REQUEST_BYTES, item_name, sniff_format, to_bytes
from qfm_client.sources import read_many
from qfm_client.types import ScoreResult
from qfm_core.image_guard import RequestLimits


STORAGE_RETRY_S = 60.0   # how long an unanswering object store is retried when retry_for is not set


class Attempts:
    """The tries of one request: endpoints that failed are avoided, and each transient failure
    costs one backoff delay until they run out."""

    def __init__(self, delays):
        self.avoid: set = set()
        self._delays = delays

    def failed(self, url: str, exc: Exception) -> float:
        """The delay before the next try, or raise: `exc` itself when it is not transient,
        ServerUnavailable when the retries are spent."""
        if protocol.classify(exc) != "retry":
            raise exc
        self.avoid.add(url)
        delay = next(self._delays, None)
        if delay is None:
            raise errors.ServerUnavailable(f"no endpoint answered after the retries: {exc}")
        return delay


class Session:
    """Settings and logic shared by QFMClient and AsyncQFMClient. Every server call carries
    `timeout` seconds (tritonclient's client_timeout). Items may be paths, object-storage URLs
    (qfm_client.sources; `storage_options` go to fsspec), bytes or PIL images."""

    def __init__(self, urls, timeout: float = 60.0, retries: int = 5, backoff: float = 0.2, max_backoff: float = 5.0,
                 batch_size: int = 8, policy: str = "least_outstanding", max_bytes: int = DEFAULT_MAX_BYTES,
                 neighbors: int = 0, retry_for: float | None = None,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, storage_options: dict | None = None):
        if timeout is None or timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        limit = RequestLimits().max_images
        if not 1 <= batch_size <= limit:
            raise ValueError(f"batch_size must be 1..{limit} (the server's images per request)")
        self.pool = EndpointPool(urls, policy)
        self.timeout, self.retries, self.backoff, self.max_backoff = timeout, retries, backoff, max_backoff
        self.batch_size, self.max_bytes, self.neighbors = batch_size, max_bytes, neighbors
        self.retry_for, self.max_request_bytes = retry_for, max(max_request_bytes, max_bytes)
        self.storage_options = storage_options
        self._checked: set[str] = set()

    def prepare(self, items, offset: int = 0) -> tuple[list[tuple[str, bytes]], list[ScoreResult]]:
        """(name, bytes) to send, and results for items that fail before sending. Files and
        objects are read together (objects of one store concurrently); StorageUnavailable when
        the store does not answer for the retry period (STORAGE_RETRY_S without retry_for)."""
        ready, failed = [], []
        located = [it for it in items if isinstance(it, (str, os.PathLike))]
        fetched = read_many(located, self.storage_options, self.retry_for or STORAGE_RETRY_S) if located else {}
        for i, item in enumerate(items):
            name = item_name(item, offset + i)
            try:
                data = fetched[item] if isinstance(item, (str, os.PathLike)) else to_bytes(item)
            except OSError as e:
                data = e
            if isinstance(data, OSError):
                failed.append(ScoreResult(name, error_code=errors.UNREADABLE, error=str(data)))
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
        """Requests of at most batch_size images and max_request_bytes."""
        out, cur, size = [], [], 0
        for name, data in ready:
            if cur and (len(cur) == self.batch_size or size + len(data) > self.max_request_bytes):
                out.append(cur)
                cur, size = [], 0
            cur.append((name, data))
            size += len(data)
        return out + ([cur] if cur else [])

    def attempts(self) -> Attempts:
        return Attempts(backoff_delays(self.retries, self.backoff, self.max_backoff, retry_for=self.retry_for))

    def needs_check(self, url: str) -> bool:
        return url not in self._checked

    def checked(self, url: str, metadata: dict) -> None:
        """Record an endpoint's model metadata once it matches the signature we speak."""
        protocol.check_metadata(metadata, url)
        self._checked.add(url)

    @staticmethod
    def chunk_failure(names: list[str], exc: Exception) -> list[ScoreResult] | None:
        """Results for a chunk whose request failed for good, or None to bisect it (an invalid
        request of several images: find the bad one, score the rest)."""
        if isinstance(exc, errors.ServerUnavailable):
            return [ScoreResult(n, error_code=errors.UNAVAILABLE, error=str(exc)) for n in names]
        kind = protocol.classify(exc)
        if kind == "invalid" and len(names) > 1:
            return None
        code = errors.INVALID_IMAGE if kind == "invalid" else errors.SERVER_ERROR
        return [ScoreResult(n, error_code=code, error=str(exc)) for n in names]

    @staticmethod
    def health_entry(live: bool, ready: bool, model_ready: bool) -> dict:
        return {"live": live, "ready": ready, "model_ready": model_ready}

    @staticmethod
    def health_error(exc: Exception) -> dict:
        return {"live": False, "ready": False, "model_ready": False, "error": str(exc)}
