"""Tensor names and I/O signatures of the exported models and TensorRT engines. The same strings
appear in the ONNX files, the TensorRT engines, Triton's config.pbtxt files and the client; change
them here only. The engine builders mark exactly these tensors and the repository writer lists
exactly these (Triton's TensorRT backend refuses an engine with an I/O tensor its config lacks)."""
from __future__ import annotations

from dataclasses import dataclass

# The student.
INPUT = "image"  # (batch, 3, H, W): float normalised with the checkpoint's mean/std, or raw uint8 pixels
                 # in the CPU serving model (onnx_export.with_uint8_input normalises in-graph)
SCORE = "score"  # float32, (batch,), 0..100, higher = better
EMBEDDING = "embedding"  # float32, (batch, D) quality embedding
BATCH_AXIS = "batch"

# The match model (export/match_onnx.py) and match engine (export/build_match_engine.py).
MATCH_QUERY = "query"                     # float32 (N, D): quality embeddings
MATCH_BANK = "bank"                       # float32 (M, D): only where the bank is an input
NEIGHBOR_DISTANCES = "neighbor_distances"  # float32 (N, k), ascending
NEIGHBOR_INDEX = "neighbor_index"          # int64 (N, k): bank rows
NEIGHBOR_SCORES = "neighbor_scores"        # float32 (N, k): those rows' known scores
NEIGHBOR_IDS = "neighbor_ids"              # int64 (N, k): those rows' ids


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str     # FP16, FP32, INT32, INT64, UINT8: Triton's TYPE_* suffix
    shape: tuple   # the engine's full shape; -1 is the dynamic batch


def student_io(size: int, dim: int, input_dtype: str = "FP16") -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) of the student engine / ONNX: crops in, one score and embedding per crop."""
    return ([TensorSpec(INPUT, input_dtype, (-1, 3, size, size))],
            [TensorSpec(SCORE, "FP32", (-1,)), TensorSpec(EMBEDDING, "FP32", (-1, dim))])


def match_io(dim: int, k: int) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) of the match engine, and of the ONNX match model with a baked bank."""
    return ([TensorSpec(MATCH_QUERY, "FP32", (-1, dim))],
            [TensorSpec(NEIGHBOR_DISTANCES, "FP32", (-1, k)), TensorSpec(NEIGHBOR_INDEX, "INT64", (-1, k)),
             TensorSpec(NEIGHBOR_SCORES, "FP32", (-1, k)), TensorSpec(NEIGHBOR_IDS, "INT64", (-1, k))])


# TensorRT's DataType names -> ours (for reading a network's or engine's I/O back).
TRT_DTYPES = {"HALF": "FP16", "FLOAT": "FP32", "INT32": "INT32", "INT64": "INT64", "UINT8": "UINT8"}
