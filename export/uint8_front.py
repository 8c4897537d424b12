"""The served student's uint8 front: a graph edit on the FP32 ONNX, no PyTorch.

Kept apart from onnx_export.py (which needs torch and the student's code) because
export/triton_repo.py applies it when it writes a CPU repository, and the serving container
writes its repository at start-up with only onnx, numpy and qfm_core installed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qfm_core import io_names
from qfm_core.files import atomic_path


def with_uint8_input(src: Path, dst: Path, mean, std) -> None:
    """The FP32 student behind a uint8 front: input `CROPS` (batch, 3, S, S) of raw 0..255 pixels,
    then Cast -> Mul -> Add (x / (255 std) - mean / std) inside the graph.

    Why: normalising 9 crops of 224x224 in NumPy costs the CPU serving preprocess ~7 ms per image
    (more than decoding and cropping together), and float32 crops are 4x the bytes every Triton
    hop copies. ONNX Runtime does the same arithmetic in one pass, threaded. The GPU path keeps FP16
    inputs because the TensorRT engine is built from the FP16 ONNX.
    """
    model = onnx.load(str(src))
    graph = model.graph
    (inp,) = [i for i in graph.input if i.name == io_names.CROPS]
    inner = io_names.CROPS + "_normalised"
    for node in graph.node:
        node.input[:] = [inner if i == io_names.CROPS else i for i in node.input]
    std = np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    mean = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
    graph.initializer.extend([numpy_helper.from_array((1.0 / (255.0 * std)).astype(np.float32), "uint8_scale"),
                              numpy_helper.from_array((-mean / std).astype(np.float32), "uint8_shift")])
    prologue = [helper.make_node("Cast", [io_names.CROPS], ["image_float"], to=TensorProto.FLOAT, name="uint8_to_float"),
                helper.make_node("Mul", ["image_float", "uint8_scale"], ["image_scaled"], name="uint8_scale_mul"),
                helper.make_node("Add", ["image_scaled", "uint8_shift"], [inner], name="uint8_shift_add")]
    nodes = prologue + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    inp.type.tensor_type.elem_type = TensorProto.UINT8
    with atomic_path(dst) as tmp:
        onnx.save(model, str(tmp))
