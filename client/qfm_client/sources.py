"""Where images come from: local files and folders, or object-storage URLs and prefixes through
fsspec (s3:// with s3fs, gs:// with gcsfs, http(s)://, file://).

    list_items(["photos/", "s3://bucket/shoot-2026/", "https://example.com/a.jpg"])
    read_many(["s3://bucket/shoot-2026/001.jpg", "photos/002.png"])   # {item: bytes or error}

Objects are read into memory and sent; nothing is copied to local disk. A URL item keeps its URL
as its name (what the results file records and --resume matches). Connection options come from
`storage_options` or the libraries' own environment variables (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, ...): a plain key (endpoint_url, anon, key, secret) is for the object stores
(s3, gs); "PROTOCOL.key" is for that protocol only (e.g. "s3.requester_pays", "http.timeout").

Errors: a missing or forbidden object is that item's error (UNREADABLE); a store that does not
answer (refused connections, timeouts, after the library's own retries) is retried with backoff
and then raised as StorageUnavailable, so that no object is recorded as failed only because the
store was briefly away; anything else (a wrong option, a bug) stops the job as a QFMError.
"""
from __future__ import annotations

import time
from pathlib import Path

from qfm_client import errors
from qfm_client.endpoints import backoff_delays
from qfm_client.inputs import IMAGE_SUFFIXES, walk_images

SCHEMES = ("s3", "gs", "gcs", "http", "https", "file")
OBJECT_STORES = ("s3", "gs", "gcs")   # what plain storage options are for
# Answers about the object itself: final for that item.
PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
# The store being away, by class name (botocore's and aiohttp's, not imported for this).
TRANSIENT_NAMES = {"EndpointConnectionError", "ConnectionClosedError", "ConnectTimeoutError", "ReadTimeoutError",
                   "ClientConnectionError", "ServerDisconnectedError", "ClientPayloadError"}


def is_url(item) -> bool:
    return isinstance(item, str) and item.split("://", 1)[0].lower() in SCHEMES and "://" in item


def options_for(protocol: str, storage_options: dict | None) -> dict:
    """The options meant for `protocol`: plain keys for the object stores, "protocol.key" keys
    for that protocol."""
    opts = {}
    for key, value in (storage_options or {}).items():
        scope, dot, name = key.partition(".")
        if dot and scope == protocol:
            opts[name] = value
        elif not dot and protocol in OBJECT_STORES:
            opts[key] = value
    return opts


def _fs(url: str, storage_options: dict | None):
    try:
        import fsspec
    except ImportError as e:   # the SDK's core install reads local files only
        raise ImportError(f"reading {url} needs fsspec: pip install 'qfm-client[storage]'") from e
    protocol = url.split("://", 1)[0].lower()
    return fsspec.core.url_to_fs(url, **options_for(protocol, storage_options))


def transient(exc: BaseException) -> bool:
    if isinstance(exc, PERMANENT):
        return False
    status = getattr(exc, "status", None)   # an HTTP answer (aiohttp's ClientResponseError)
    if isinstance(status, int):
        return status in (408, 429) or status >= 500
    if isinstance(exc, (OSError, TimeoutError)):
        return True
    return bool({c.__name__ for c in type(exc).__mro__} & TRANSIENT_NAMES)


def _has_image_suffix(path: str) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def list_items(paths, storage_options: dict | None = None) -> list[str]:
    """Every image under the given files, folders, URLs and URL prefixes, sorted, each once. A
    prefix lists image objects (by suffix) recursively; an http(s) URL is one image."""
    local = [p for p in paths if not is_url(p)]
    found = [str(p) for p in walk_images(local)] if local else []
    for url in (p for p in paths if is_url(p)):
        if url.lower().startswith(("http://", "https://")):
            found.append(url)
            continue
        fs, root = _fs(url, storage_options)
        if fs.isdir(root):
            found += [fs.unstrip_protocol(p) for p in fs.find(root) if _has_image_suffix(p)]
        elif fs.isfile(root):
            found.append(url)
        else:
            raise FileNotFoundError(f"{url} does not exist (no object and no prefix of that name)")
    return sorted(dict.fromkeys(found))


def read_many(items, storage_options: dict | None = None, retry_for: float = 60.0) -> dict:
    """{item: bytes, or the OSError that makes it unreadable}. URL items are fetched concurrently
    per filesystem (fsspec's cat); while the service is unreachable, retried for `retry_for`
    seconds with backoff, then StorageUnavailable."""
    out: dict = {}
    by_fs: dict = {}
    for item in items:
        if is_url(item):
            fs, path = _fs(item, storage_options)
            by_fs.setdefault(id(fs), (fs, {}))[1][path] = item
        else:
            try:
                out[item] = Path(item).read_bytes()
            except OSError as e:
                out[item] = e
    for fs, names in by_fs.values():
        out.update(_cat_with_retries(fs, names, retry_for))
    return out


def _cat_with_retries(fs, names: dict, retry_for: float) -> dict:
    todo, got = dict(names), {}
    delays = backoff_delays(0, 0.5, 4.0, retry_for=retry_for)
    while True:
        answers = fs.cat(list(todo), on_error="return")   # a list in, {path: bytes or exception} out
        away = {}
        for path, value in answers.items():
            if isinstance(value, bytes) or isinstance(value, PERMANENT):
                got[todo[path]] = value
            elif transient(value):
                away[path] = value
            elif isinstance(getattr(value, "status", None), int):   # 401, 403, 410, ...: about the object
                got[todo[path]] = PermissionError(f"{todo[path]}: HTTP {value.status} {getattr(value, 'message', '')}")
            else:
                raise errors.QFMError(f"reading {todo[path]} failed: {type(value).__name__}: {value}")
        if not away:
            return got
        delay = next(delays, None)
        if delay is None:
            first = next(iter(away.values()))
            raise errors.StorageUnavailable(f"object storage did not answer for {retry_for:.0f} s "
                                            f"({type(first).__name__}: {first})")
        time.sleep(delay)
        todo = {p: todo[p] for p in away}
