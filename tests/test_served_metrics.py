"""The scoring model's quality metrics (core/qfm_core/served_metrics.py), scraped from the real
server's Prometheus port after a job of known content: every count and sum is checked."""
import io
import re
import urllib.request

import numpy as np
from PIL import Image
from tritonclient.utils import InferenceServerException

from conftest import infer_images
from qfm_core import io_names, served_metrics
from qfm_core.image_guard import RequestLimits

LINE = re.compile(r'^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$')


def scrape(server) -> dict:
    """{(name, frozenset(labels)): value} of every sample on the metrics port."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        m = LINE.match(line)
        if m and not line.startswith("#"):
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m["labels"] or ""))
            out[(m["name"], labels)] = float(m["value"])
    return out


def total(samples: dict, name: str, **want) -> float:
    """Sum over every series of `name` whose labels include `want` (both score instances)."""
    return sum(v for (n, labels), v in samples.items()
               if n == name and set(want.items()) <= set(labels))


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 40, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_served_quality_metrics_count_a_known_job(fast_server, livec_dev):
    photos = [(livec_dev / "images" / n).read_bytes() for n in ("100.png", "1001.JPG", "1003.JPG")]
    before = scrape(fast_server)
    a = infer_images(fast_server.grpc_url, photos + [b"not an image", b""])
    b = infer_images(fast_server.grpc_url, [_png(40), _png(200)])
    try:
        infer_images(fast_server.grpc_url, [_png(1)] * (RequestLimits().max_images + 1))
    except InferenceServerException:
        pass
    else:
        raise AssertionError("the over-limit request was served")
    after = scrape(fast_server)
    delta = lambda name, **labels: total(after, name, **labels) - total(before, name, **labels)   # noqa: E731

    served = np.concatenate([a.as_numpy(io_names.SCORE)[:3], b.as_numpy(io_names.SCORE)])
    assert delta(served_metrics.SCORE + "_count") == 5
    assert abs(delta(served_metrics.SCORE + "_sum") - served.sum()) < 1e-3 * max(1.0, served.sum())
    for edge in served_metrics.SCORE_BUCKETS:   # cumulative buckets, as Prometheus defines them
        assert delta(served_metrics.SCORE + "_bucket", le=_le(edge)) == (served <= edge).sum(), edge
    assert delta(served_metrics.ITEM_ERRORS, code="UNSUPPORTED_FORMAT") == 1
    assert delta(served_metrics.ITEM_ERRORS, code="EMPTY") == 1
    assert delta(served_metrics.ITEM_ERRORS, code=served_metrics.REQUEST_REFUSED) == 1
    assert delta(served_metrics.IMAGES_PER_REQUEST + "_count") == 2     # the refused request is not served
    assert delta(served_metrics.IMAGES_PER_REQUEST + "_sum") == 7
    assert delta(served_metrics.IMAGES_PER_REQUEST + "_bucket", le=_le(4.0)) == 1
    assert delta(served_metrics.IMAGES_PER_REQUEST + "_bucket", le=_le(8.0)) == 2


def _le(edge: float) -> str:
    """How Triton prints a bucket edge (le="10", le="0.5")."""
    return f"{edge:g}"


def test_dashboard_reads_the_published_metrics():
    import json

    from conftest import REPO
    board = json.loads((REPO / "serving" / "grafana" / "qfm_dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in board["panels"] for t in p.get("targets", []))
    for name in (served_metrics.SCORE, served_metrics.ITEM_ERRORS, served_metrics.IMAGES_PER_REQUEST,
                 "nv_inference_request_success", "nv_inference_queue_summary_us", "nv_inference_request_summary_us"):
        assert name in exprs, name
    titles = {p["title"] for p in board["panels"]}
    assert {"Throughput (images/s)", "Latency percentiles", "Queue time", "Served score distribution",
            "Item errors by code"} <= titles
