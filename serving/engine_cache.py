"""A folder of TensorRT engines per build key, in a volume shared by restarts and replicas.

An engine only loads on the GPU model and TensorRT version it was built with, and only means
something for the ONNX (and bank) it came from, so those are its key:

    <cache>/<gpu-slug>-sm<cc>-trt<version>-<hash12>/    engines + key.json

`<hash12>` covers the whole key (the ONNX and bank sha256, the kernel sources, the batch
profile), so a changed input lands in a new folder and an old folder is never overwritten.

Build once, even with several replicas on one volume: the first start takes an exclusive
`flock` on `<cache>/.lock`, builds into `<cache>/.building-<pid>`, and renames it into place;
the others wait on the lock and then find the folder. A build that fails or is killed leaves
only its `.building-*` folder, which the next holder of the lock deletes.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Callable, Iterator

KEY_FILE = "key.json"


def key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _device(key: dict) -> str:
    gpu = re.sub(r"[^a-z0-9]+", "-", str(key["gpu_name"]).lower()).strip("-") or "gpu"
    cc = str(key["compute_capability"]).replace(".", "")
    return f"{gpu}-sm{cc}-trt{key['tensorrt']}"


def folder_name(key: dict) -> str:
    """Readable first (which GPU, which TensorRT), exact last (the digest)."""
    return f"{_device(key)}-{key_digest(key)[:12]}"


def timing_cache(cache: Path, key: dict) -> Path:
    """TensorRT's timing cache for this GPU model and TensorRT release. One per device: the
    builder refuses a cache made on another GPU or release rather than silently mistuning."""
    return Path(cache) / f"timing-{_device(key)}.cache"


@contextlib.contextmanager
def _locked(cache: Path, log: Callable[[str], None]) -> Iterator[None]:
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another process is building engines in {cache}; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def cached_engines(cache: Path, key: dict, build: Callable[[Path], None],
                   log: Callable[[str], None] = print) -> tuple[Path, bool]:
    """The folder holding the engines for `key`, building them with `build(folder)` when no
    complete folder exists. Returns (folder, built_now)."""
    cache = Path(cache)
    final = cache / folder_name(key)
    if _complete(final, key):
        return final, False
    with _locked(cache, log):
        if _complete(final, key):          # a replica built it while this one waited
            return final, False
        for stale in cache.glob(".building-*"):
            shutil.rmtree(stale, ignore_errors=True)
        work = cache / f".building-{os.getpid()}"
        work.mkdir()
        t0 = time.time()
        try:
            build(work)
            (work / KEY_FILE).write_text(json.dumps({**key, "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                                     "build_seconds": round(time.time() - t0, 1)}, indent=2) + "\n")
            if final.exists():             # a folder without a valid key.json (damaged): replace it
                shutil.rmtree(final)
            os.rename(work, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return final, True


def _complete(folder: Path, key: dict) -> bool:
    """key.json is written last, so its presence with the same key means every engine is there."""
    try:
        recorded = json.loads((folder / KEY_FILE).read_text())
    except (OSError, ValueError):
        return False
    return {k: recorded.get(k) for k in key} == key
