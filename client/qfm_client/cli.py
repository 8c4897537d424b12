"""qfm-score: score images on a QFM-IQM Triton deployment and stream the results to a file.

    qfm-score photos/ extra.jpg --url localhost:8001 --out results.jsonl --concurrency 8
    qfm-score photos/ --url host1:8001 --url host2:8001 --out results.jsonl --resume
    qfm-score s3://bucket/shoot-2026/ --url localhost:8001 --out results.parquet
    qfm-score s3://bucket/shoot/ --storage-option endpoint_url=http://127.0.0.1:9000 --url ... --out r.jsonl

Inputs: files, folders (walked recursively), and object-storage URLs or prefixes through fsspec:
s3:// (s3fs; credentials and endpoint from the usual AWS variables or --storage-option), gs://
(needs gcsfs), http(s):// (one image per URL), file://. Objects are streamed into memory, never
copied to disk.

Each result is one item: {"item": path or URL, "score": 0..100} or {"item": ..., "error_code":
..., "error": ...} for an item that cannot be scored (undecodable, too large, missing, forbidden).
Results are appended whole to a JSON-lines journal as they arrive (the --out file itself, or
<out>.journal.jsonl for a .parquet --out), so a crash or Ctrl-C loses at most the requests in
flight; `--resume` skips every item already in it, so nothing is scored twice. A .parquet --out
is written from the journal when the job completes. If no server, or the object store, answers
(after retries) the job stops without recording those items: rerun with --resume.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

from qfm_client import errors
from qfm_client.aio import AsyncQFMClient
from qfm_client.endpoints import POLICIES
from qfm_client.inputs import DEFAULT_MAX_BYTES
from qfm_client.results import journal_path, write_parquet
from qfm_client.sources import list_items
from qfm_core.image_guard import RequestLimits

# Per-item outcomes that are final and recorded; transient ones abort the job instead.


class JsonlAppender:
    """Appends one JSON object per line with a single write() on an O_APPEND descriptor."""

    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, record: dict) -> None:
        os.write(self.fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())

    def close(self) -> None:
        os.fsync(self.fd)
        os.close(self.fd)


def load_done(path: Path) -> set[str]:
    """Items already in an output file; a torn last line (crash mid-write) is cut off."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    keep = data[: data.rfind(b"\n") + 1]
    if len(keep) != len(data):
        with open(path, "r+b") as f:
            f.truncate(len(keep))
    done = set()
    for line in keep.decode().splitlines():
        if line.strip():
            done.add(json.loads(line)["item"])
    return done


def storage_options(pairs: list[str]) -> dict:
    """KEY=VALUE pairs as fsspec keyword arguments (true/false and numbers as such)."""
    opts = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--storage-option wants KEY=VALUE, got {pair!r}")
        low = value.lower()
        opts[key] = True if low == "true" else False if low == "false" else _number(value)
    return opts


def _number(value: str):
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def histogram(scores: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(scores, bins=40, range=(0, 100), color="#4c72b0")
    ax.set_xlabel("QFM-IQM score (0..100, higher = better)")
    ax.set_ylabel("images")
    ax.set_title(f"{len(scores)} images")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


async def run(args, todo: list[str], out: JsonlAppender, bar) -> tuple[Counter, list[float]]:
    """Score `todo`, appending each result as it arrives; returns (outcome counts, scores)."""
    counts: Counter = Counter()
    scores: list[float] = []
    async with AsyncQFMClient(args.url, max_in_flight=args.concurrency, timeout=args.timeout, retries=args.retries,
                              batch_size=args.batch_size, policy=args.policy, max_bytes=args.max_bytes,
                              neighbors=args.neighbors, retry_for=args.retry_for,
                              storage_options=args.storage_options) as client:
        # --retry-for rides out a server that goes away mid-job; a server that never answered at
        # all is far more often a wrong --url, which should not take five minutes to say.
        health = await client.health()
        if not any(h["live"] for h in health.values()):
            why = "; ".join(f"{u}: {h.get('error', 'not live')}" for u, h in health.items())
            raise errors.ServerUnavailable(f"no Triton server answers at {', '.join(health)} ({why})")
        async for r in client.score_iter(todo):
            if r.error_code == errors.UNAVAILABLE:   # not an answer about the item: stop, resume later
                raise errors.ServerUnavailable(r.error)
            out.write(r.to_dict())
            counts[r.error_code or "ok"] += 1
            if r.ok:
                scores.append(r.score)
            bar.update(1)
    return counts, scores


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="qfm-score", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", help="image files, folders (walked recursively), URLs and URL prefixes")
    ap.add_argument("--url", action="append", required=True,
                    help="Triton gRPC endpoint host:port; repeat for several replicas")
    ap.add_argument("--out", required=True, type=Path, help="results file: JSON lines, or Parquet if it ends in .parquet")
    ap.add_argument("--resume", action="store_true", help="skip items already in the results and append the rest")
    ap.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                    help="fsspec option for the object stores (s3, gs), e.g. endpoint_url=http://127.0.0.1:9000 "
                         "or anon=true; PROTOCOL.KEY=VALUE for one protocol (s3.requester_pays=true); repeatable")
    ap.add_argument("--neighbors", type=int, default=0, help="nearest references to return per image (default: 0)")
    ap.add_argument("--concurrency", type=int, default=8, help="requests in flight (default: 8)")
    ap.add_argument("--batch-size", type=int, default=8, help="images per request (default: 8)")
    ap.add_argument("--policy", choices=POLICIES, default="least_outstanding", help="endpoint selection")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default: 120)")
    ap.add_argument("--retries", type=int, default=8, help="retries of unavailable servers, with backoff (default: 8)")
    ap.add_argument("--retry-for", type=float, default=300.0,
                    help="keep retrying a server or object store that becomes unavailable mid-job (restart, overload) for this "
                         "many seconds before stopping with a --resume hint (default: 300); a server that does "
                         "not answer when the job starts is reported at once")
    ap.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, help="skip files larger than this")
    ap.add_argument("--histogram", type=Path, help="also write a score histogram PNG (needs matplotlib)")
    args = ap.parse_args(argv)
    limit = RequestLimits().max_images
    if not 1 <= args.batch_size <= limit:
        ap.error(f"--batch-size must be 1..{limit}: the server takes at most {limit} images per request")
    if args.timeout <= 0:
        ap.error("--timeout must be a positive number of seconds")
    try:
        args.storage_options = storage_options(args.storage_option)
    except ValueError as e:
        ap.error(str(e))
    from tqdm import tqdm

    journal = journal_path(args.out)
    if journal != args.out:
        try:   # before the job, not after it
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            ap.error("a .parquet --out needs pyarrow: pip install 'qfm-client[parquet]' (or write .jsonl)")
    if (args.out.exists() or journal.exists()) and not args.resume:
        ap.error(f"{args.out if args.out.exists() else journal} exists: pass --resume to continue it, or choose another --out")
    try:
        items = list_items(args.paths, args.storage_options)
    except FileNotFoundError as e:
        ap.error(str(e))
    except ImportError as e:
        ap.error(str(e))
    except Exception as e:   # the store itself: wrong endpoint, no credentials, unreachable
        print(f"error: cannot list the inputs: {type(e).__name__}: {e}", file=sys.stderr)
        return 3
    done = load_done(journal) if args.resume else set()
    todo = [p for p in items if p not in done]
    journal.parent.mkdir(parents=True, exist_ok=True)
    out = JsonlAppender(journal)
    t0 = time.time()
    bar = tqdm(total=len(items), initial=len(items) - len(todo), unit="img", desc="qfm-score")
    try:
        counts, scores = asyncio.run(run(args, todo, out, bar))
    except KeyboardInterrupt:
        print(f"\ninterrupted: results so far are in {journal}; rerun with --resume", file=sys.stderr)
        return 130
    except errors.QFMError as e:   # no server or no store answered (or a store refused our options)
        print(f"\nerror: {e}\nresults so far are in {journal}; rerun with --resume when it is fixed or back",
              file=sys.stderr)
        return 3
    finally:
        bar.close()
        out.close()
    elapsed = time.time() - t0
    if journal != args.out:
        write_parquet(journal, args.out)
    n = sum(counts.values())
    summary = {"scored": counts.get("ok", 0), "errors": {k: v for k, v in counts.items() if k != "ok"},
               "skipped_resume": len(items) - len(todo), "total_items": len(items),
               "images_per_s": round(n / elapsed, 2) if elapsed > 0 else None, "out": str(args.out)}
    print(json.dumps(summary))
    if args.histogram and scores:
        histogram(scores, args.histogram)
    return 0


if __name__ == "__main__":
    sys.exit(main())
