"""Several Triton replicas behind one client: round-robin or least-outstanding selection, and
exponential backoff with jitter between retries."""
from __future__ import annotations

import itertools
import random
import time
import threading
from contextlib import contextmanager

POLICIES = ("round_robin", "least_outstanding")


class EndpointPool:
    def __init__(self, urls, policy: str = "least_outstanding"):
        urls = [urls] if isinstance(urls, str) else list(urls)
        if not urls:
            raise ValueError("need at least one server URL (host:port)")
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}")
        self.urls, self.policy = urls, policy
        self.outstanding = {u: 0 for u in urls}
        self.sent = {u: 0 for u in urls}
        self._rr = itertools.cycle(urls)
        self._lock = threading.Lock()

    def pick(self, avoid: set | None = None) -> str:
        with self._lock:
            candidates = [u for u in self.urls if u not in (avoid or set())] or self.urls
            if self.policy == "round_robin":
                url = next(u for u in self._rr if u in candidates)
            else:  # fewest requests in flight, ties broken by fewest sent so far
                url = min(candidates, key=lambda u: (self.outstanding[u], self.sent[u]))
            self.outstanding[url] += 1
            self.sent[url] += 1
            return url

    def release(self, url: str) -> None:
        with self._lock:
            self.outstanding[url] -= 1

    @contextmanager
    def use(self, avoid: set | None = None):
        url = self.pick(avoid)
        try:
            yield url
        finally:
            self.release(url)


def backoff_delays(retries: int, base: float, cap: float, rng: random.Random | None = None,
                   retry_for: float | None = None):
    """Full-jitter exponential backoff: retry i waits uniform(0, min(cap, base * 2**i)).
    With `retry_for` (seconds), retries go on until that much time has passed instead of
    stopping after `retries` (a batch job riding out a server restart)."""
    rng = rng or random.Random()
    start, i = time.monotonic(), 0
    while (i < retries) if retry_for is None else (time.monotonic() - start < retry_for):
        yield rng.uniform(0, min(cap, base * (2 ** min(i, 30))))
        i += 1
