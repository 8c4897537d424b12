"""What goes over the wire, shared by the sync and async clients: tensor names, request
building, result parsing, and how a tritonclient exception is classified."""
from __future__ import annotations

import numpy as np

from qfm_client import errors
from qfm_client.types import Neighbor, ScoreResult
from qfm_core.io_names import (ENSEMBLE as MODEL, IMAGE as INPUT, ITEM_ERROR, NEIGHBOR_DISTANCES, NEIGHBOR_IDS,
                               NEIGHBOR_OUTPUTS, NEIGHBOR_SCORES, SCORE, SCORE_OUTPUTS)

RETRYABLE = ("UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED")


def build_request(module, blobs: list[bytes], neighbors: bool):
    """(inputs, outputs) for one infer call; `module` is tritonclient.grpc or tritonclient.grpc.aio."""
    import tritonclient.grpc as grpcclient  # InferInput/InferRequestedOutput live here for both

    inp = grpcclient.InferInput(INPUT, [len(blobs)], "BYTES")
    inp.set_data_from_numpy(np.array(blobs, dtype=np.object_))
    names = [SCORE, ITEM_ERROR] + (list(NEIGHBOR_OUTPUTS) if neighbors else [])
    return [inp], [grpcclient.InferRequestedOutput(n) for n in names]


def check_metadata(meta: dict, url: str) -> None:
    """Raise ModelNotReady unless the served model has the signature this client speaks."""
    inputs = {i["name"]: i["datatype"] for i in meta.get("inputs", [])}
    outputs = {o["name"] for o in meta.get("outputs", [])}
    missing = (set(SCORE_OUTPUTS) | set(NEIGHBOR_OUTPUTS)) - outputs
    if inputs.get(INPUT) != "BYTES" or missing:
        raise errors.ModelNotReady(f"{url}: {MODEL} has inputs {inputs} and outputs {sorted(outputs)}; this client "
                                   f"needs a BYTES input {INPUT} and outputs {sorted(set(SCORE_OUTPUTS) | set(NEIGHBOR_OUTPUTS))}")


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
