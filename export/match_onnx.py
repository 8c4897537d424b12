"""The match model in standard ONNX ops, for ONNX Runtime on CPU (and GPU without our kernel):

    distances = |q|^2 + |b|^2 - 2 q.b^T        (squared L2, the GEMM form)   or  1 - q^.b^
    NEIGHBOR_DISTANCES, NEIGHBOR_INDEX = TopK(distances, k, smallest)

The bank is either a second graph input (`BANK`: replace the bank file, nothing is rebuilt;
used by the Python-backend model) or a constant baked into the graph (for Triton's native
onnxruntime backend, whose inputs must all come from the request; a new bank rebuilds only this
small file, never the student). ONNX Runtime's TopK returns, among equal distances, the lower
index first; ties are rare in practice.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qfm_core import io_names
from qfm_core.files import atomic_path

QUERY, BANK = io_names.MATCH_QUERY, io_names.MATCH_BANK
DISTANCES, INDEX = io_names.NEIGHBOR_DISTANCES, io_names.NEIGHBOR_INDEX
SCORES, IDS = io_names.NEIGHBOR_SCORES, io_names.NEIGHBOR_IDS
METRICS = ("sq_l2", "cosine")


def build_match_model(dim: int, k: int, metric: str = "sq_l2", bank: np.ndarray | None = None,
                      bank_scores: np.ndarray | None = None, bank_ids: np.ndarray | None = None,
                      opset: int = 17) -> onnx.ModelProto:  # axes are attributes in opset 17
    """With a baked bank, `bank_scores` and `bank_ids` are baked too and gathered into the extra
    outputs `NEIGHBOR_SCORES` and `NEIGHBOR_IDS` (what Triton's native backends must return)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if k < 1:
        raise ValueError("k must be at least 1")
    if bank is not None and (bank.ndim != 2 or bank.shape[1] != dim or len(bank) < k):
        raise ValueError(f"bank must be (M >= k={k}, {dim}), got {bank.shape}")
    nodes, inits = [], [numpy_helper.from_array(np.array([k], np.int64), "k"),
                        numpy_helper.from_array(np.array([-2.0], np.float32), "minus2"),
                        numpy_helper.from_array(np.array([1.0], np.float32), "one")]
    inputs = [helper.make_tensor_value_info(QUERY, TensorProto.FLOAT, ["n", dim])]
    if bank is None:
        inputs.append(helper.make_tensor_value_info(BANK, TensorProto.FLOAT, ["m", dim]))
    else:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(bank, np.float32), BANK))
    q, b = QUERY, BANK
    if metric == "cosine":
        for src in (QUERY, BANK):
            nodes += [helper.make_node("ReduceL2", [src], [f"{src}_norm"], axes=[1], keepdims=1),
                      helper.make_node("Div", [src, f"{src}_norm"], [f"{src}_unit"])]
        q, b = f"{QUERY}_unit", f"{BANK}_unit"
    nodes += [helper.make_node("Transpose", [b], ["bank_t"], perm=[1, 0]),
              helper.make_node("MatMul", [q, "bank_t"], ["dot"])]
    if metric == "sq_l2":
        nodes += [helper.make_node("ReduceSumSquare", [q], ["q_sq"], axes=[1], keepdims=1),   # (n, 1)
                  helper.make_node("ReduceSumSquare", [b], ["b_sq_col"], axes=[1], keepdims=1),  # (m, 1)
                  helper.make_node("Transpose", ["b_sq_col"], ["b_sq"], perm=[1, 0]),          # (1, m)
                  helper.make_node("Mul", ["dot", "minus2"], ["dot_m2"]),
                  helper.make_node("Add", ["dot_m2", "q_sq"], ["partial"]),
                  helper.make_node("Add", ["partial", "b_sq"], ["dist_raw"]),
                  # Rounding can make an exact duplicate slightly negative; clamp as the kernel does.
                  helper.make_node("Relu", ["dist_raw"], ["distances"])]
    else:
        nodes += [helper.make_node("Sub", ["one", "dot"], ["distances"])]
    nodes.append(helper.make_node("TopK", ["distances", "k"], [DISTANCES, INDEX], axis=1, largest=0, sorted=1))
    outputs = [helper.make_tensor_value_info(DISTANCES, TensorProto.FLOAT, ["n", k]),
               helper.make_tensor_value_info(INDEX, TensorProto.INT64, ["n", k])]
    if bank is not None and bank_scores is not None and bank_ids is not None:
        inits += [numpy_helper.from_array(np.asarray(bank_scores, np.float32), "bank_scores"),
                  numpy_helper.from_array(np.asarray(bank_ids, np.int64), "bank_ids")]
        nodes += [helper.make_node("Gather", ["bank_scores", INDEX], [SCORES], axis=0),
                  helper.make_node("Gather", ["bank_ids", INDEX], [IDS], axis=0)]
        outputs += [helper.make_tensor_value_info(SCORES, TensorProto.FLOAT, ["n", k]),
                    helper.make_tensor_value_info(IDS, TensorProto.INT64, ["n", k])]
    graph = helper.make_graph(nodes, f"qfm_match_{metric}_k{k}", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="qfm-iqm")
    onnx.checker.check_model(model)
    return model


def save(model: onnx.ModelProto, path: Path) -> None:
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
