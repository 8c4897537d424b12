"""What goes over the wire, shared by the sync and async clients: tensor names, request
building, result parsing, and how a tritonclient exception is classified."""
from __future__ import annotations

import numpy as np

from qfm_client.types import Neighbor, ScoreResult

MODEL = "qfm_iqm"
INPUT = "IMAGE"
SCORE, EMBEDDING, ITEM_ERROR = "SCORE", "EMBEDDING", "ITEM_ERROR"
NEIGHBOR_IDS, NEIGHBOR_SCORES, NEIGHBOR_DISTANCES = "NEIGHBOR_IDS", "NEIGHBOR_SCORES", "NEIGHBOR_DISTANCES"
RETRYABLE = ("UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED")


def build_request(module, blobs: list[bytes], neighbors: bool):
    """(inputs, outputs) for one infer call; `module` is tritonclient.grpc or tritonclient.grpc.aio."""
    import tritonclient.grpc as grpcclient  # InferInput/InferRequestedOutput live here for both

    inp = grpcclient.InferInput(INPUT, [len(blobs)], "BYTES")
    inp.set_data_from_numpy(np.array(blobs, dtype=np.object_))
    # EMBEDDING always rides along: Triton 2.51 fails an ensemble request that asks for SCORE alone
    # ("unexpected deadlock, at least one output is not set"; seen with the pip server), while
    # SCORE + EMBEDDING works. It costs 1.5 KB per image.
    names = [SCORE, EMBEDDING, ITEM_ERROR] + ([NEIGHBOR_IDS, NEIGHBOR_SCORES, NEIGHBOR_DISTANCES] if neighbors else [])
    return [inp], [grpcclient.InferRequestedOutput(n) for n in names]


def parse_result(result, names: list[str], k: int | None, endpoint: str) -> list[ScoreResult]:
    scores = result.as_numpy(SCORE).reshape(-1)
    if len(scores) != len(names):
        raise ValueError(f"server returned {len(scores)} scores for {len(names)} images")
    out = []
    ids = result.as_numpy(NEIGHBOR_IDS) if k else None
    problems = result.as_numpy(ITEM_ERROR)
    problems = [b"" for _ in names] if problems is None else problems.reshape(-1)
    for i, name in enumerate(names):
        problem = problems[i].decode(errors="replace") if isinstance(problems[i], bytes) else str(problems[i])
        if problem:   # "CODE: message" from the server's preprocess; this item's other outputs are void
            code, _, message = problem.partition(":")
            out.append(ScoreResult(name, error_code=code.strip() or "INVALID_IMAGE", error=message.strip(),
                                   endpoint=endpoint))
            continue
        neigh = []
        if ids is not None:
            ns, nd = result.as_numpy(NEIGHBOR_SCORES), result.as_numpy(NEIGHBOR_DISTANCES)
            neigh = [Neighbor(int(ids[i, j]), float(ns[i, j]), float(nd[i, j])) for j in range(min(k, ids.shape[1]))]
        out.append(ScoreResult(name, float(scores[i]), neigh, endpoint=endpoint))
    return out


def classify(exc: Exception) -> str:
    """'retry' (transient: another try or endpoint may work), 'invalid' (the input itself), or 'fatal'."""
    status = str(getattr(exc, "status", lambda: "")() or "")
    message = str(exc)
    if any(code in status for code in RETRYABLE) or "failed to connect" in message.lower() \
            or "unavailable" in message.lower() or isinstance(exc, (ConnectionError, TimeoutError)):
        return "retry"
    if "INVALID_ARG" in status or "cannot decode image" in message:
        return "invalid"
    return "fatal"
