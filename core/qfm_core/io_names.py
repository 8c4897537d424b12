"""Every tensor and model name of the deployment, in one place: the ONNX files, the TensorRT
engines, the Triton configs (export/triton_repo.py writes them from these), the Triton Python
models, the client and the benchmarks all read them from here. A test greps the repository for
any of these strings written as a literal anywhere else.

One style: tensor names are UPPER_SNAKE at every stage, and a tensor keeps its name from the
model that makes it to the model that reads it, so the ensemble's maps are identities and the
match model's input is EMBEDDING on every target. The builders mark exactly the tensors listed by
student_io / match_io and the repository writer lists exactly those (Triton's TensorRT backend
refuses an engine with an I/O tensor its config lacks).
"""
from __future__ import annotations

from dataclasses import dataclass

# Models of the repository. Callers use ENSEMBLE; the others are its steps.
ENSEMBLE = "qfm_iqm"          # IMAGE -> SCORE, EMBEDDING, ITEM_ERROR, NEIGHBOR_*
SCORE_MODEL = "qfm_score"     # IMAGE -> SCORE, EMBEDDING, ITEM_ERROR (decode, crop, student, mean)
STUDENT_MODEL = "qfm_student"  # CROPS -> CROP_SCORES, CROP_EMBEDDINGS
MATCH_MODEL = "qfm_match"     # EMBEDDING -> NEIGHBOR_*
MODELS = (SCORE_MODEL, STUDENT_MODEL, MATCH_MODEL, ENSEMBLE)   # load order

# The public request: encoded images in, one score per image out.
IMAGE = "IMAGE"            # BYTES (N,): encoded image files
SCORE = "SCORE"            # FP32 (N,): 0..100, higher = better
EMBEDDING = "EMBEDDING"    # FP32 (N, D): the image's quality embedding (mean over its crops)
ITEM_ERROR = "ITEM_ERROR"  # BYTES (N,): "" when scored, else "CODE: message"

# The student (ONNX, TensorRT engine, qfm_student).
CROPS = "CROPS"                      # (batch, 3, S, S): FP16/FP32 normalised, or raw UINT8 pixels
                                     # where the graph normalises (uint8_front.with_uint8_input)
CROP_SCORES = "CROP_SCORES"          # FP32 (batch,)
CROP_EMBEDDINGS = "CROP_EMBEDDINGS"  # FP32 (batch, D)
BATCH_AXIS = "batch"                 # the ONNX dynamic axis' name (not a tensor)

# The match model (export/match_onnx.py) and match engine (export/build_match_engine.py).
MATCH_QUERY = EMBEDDING                    # FP32 (N, D): the images' quality embeddings
MATCH_BANK = "BANK"                        # FP32 (M, D): only where the bank is an input
NEIGHBOR_DISTANCES = "NEIGHBOR_DISTANCES"  # FP32 (N, k), ascending
NEIGHBOR_INDEX = "NEIGHBOR_INDEX"          # INT64 (N, k): bank rows
NEIGHBOR_SCORES = "NEIGHBOR_SCORES"        # FP32 (N, k): those rows' known scores
NEIGHBOR_IDS = "NEIGHBOR_IDS"              # INT64 (N, k): those rows' ids

# What each public output is for the client (neighbours only when asked).
SCORE_OUTPUTS = (SCORE, EMBEDDING, ITEM_ERROR)
NEIGHBOR_OUTPUTS = (NEIGHBOR_IDS, NEIGHBOR_SCORES, NEIGHBOR_DISTANCES)
TENSORS = (IMAGE, SCORE, EMBEDDING, ITEM_ERROR, CROPS, CROP_SCORES, CROP_EMBEDDINGS, MATCH_BANK,
           NEIGHBOR_DISTANCES, NEIGHBOR_INDEX, NEIGHBOR_SCORES, NEIGHBOR_IDS)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str     # FP16, FP32, INT32, INT64, UINT8, STRING: Triton's TYPE_* suffix
    shape: tuple   # the model's full shape; -1 is the dynamic batch


def student_io(size: int, dim: int, input_dtype: str = "FP16") -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) of the student engine / ONNX: crops in, one score and embedding per crop."""
    return ([TensorSpec(CROPS, input_dtype, (-1, 3, size, size))],
            [TensorSpec(CROP_SCORES, "FP32", (-1,)), TensorSpec(CROP_EMBEDDINGS, "FP32", (-1, dim))])


def match_io(dim: int, k: int) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) of the match engine, and of the ONNX match model with a baked bank."""
    return ([TensorSpec(MATCH_QUERY, "FP32", (-1, dim))],
            [TensorSpec(NEIGHBOR_DISTANCES, "FP32", (-1, k)), TensorSpec(NEIGHBOR_INDEX, "INT64", (-1, k)),
             TensorSpec(NEIGHBOR_SCORES, "FP32", (-1, k)), TensorSpec(NEIGHBOR_IDS, "INT64", (-1, k))])


def score_io(dim: int) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) of qfm_score, the ensemble's first step."""
    return ([TensorSpec(IMAGE, "STRING", (-1,))],
            [TensorSpec(SCORE, "FP32", (-1,)), TensorSpec(EMBEDDING, "FP32", (-1, dim)),
             TensorSpec(ITEM_ERROR, "STRING", (-1,))])


def ensemble_io(dim: int, k: int) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) of the ensemble callers use: qfm_score's outputs plus the neighbours."""
    inputs, outputs = score_io(dim)
    neighbors = {t.name: t for t in match_io(dim, k)[1]}
    return inputs, outputs + [neighbors[n] for n in NEIGHBOR_OUTPUTS]


# TensorRT's DataType names -> ours (for reading a network's or engine's I/O back).
TRT_DTYPES = {"HALF": "FP16", "FLOAT": "FP32", "INT32": "INT32", "INT64": "INT64", "UINT8": "UINT8"}
