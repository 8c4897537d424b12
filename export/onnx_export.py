"""Student -> ONNX: FP32 export with named I/O and a dynamic batch axis, FP16 conversion, cleanup.

The FP16 model is strongly typed for TensorRT: FP16 weights and FP16 compute, FP16 input
`CROPS`; the outputs `CROP_SCORES` and `CROP_EMBEDDINGS` stay FP32 (a Cast at the end) so every consumer reads
the same dtype from both variants. Normalisations and softmax stay in FP16 too; the parity report
shows what that costs on the 0..100 scale. Where FP16 misses the parity limits, the first backbone
stages can be kept in FP32 (`keep_fp32`); export/to_onnx.py picks the fewest that pass and records
them.
"""
from __future__ import annotations

import re
from pathlib import Path

import onnx
import torch

from qfm_core import io_names
from qfm_core.files import atomic_path
from training.models.student import QFMStudent

DEFAULT_OPSET = 17


class _ExportWrapper(torch.nn.Module):
    """Returns exactly (score, embedding) in float32 from a plain forward."""

    def __init__(self, model: QFMStudent):
        super().__init__()
        self.model = model

    def forward(self, image):
        score, embedding = self.model(image)
        return score.float(), embedding.float()


def export_fp32(model: QFMStudent, path: Path, opset: int = DEFAULT_OPSET, example_batch: int = 2) -> None:
    model = model.eval().float().to(memory_format=torch.contiguous_format)
    size = model.cfg.input_size
    example = torch.zeros(example_batch, 3, size, size)
    with torch.no_grad(), atomic_path(path) as tmp:
        torch.onnx.export(
            _ExportWrapper(model), (example,), str(tmp), dynamo=False, opset_version=opset,
            input_names=[io_names.CROPS], output_names=[io_names.CROP_SCORES, io_names.CROP_EMBEDDINGS],
            dynamic_axes={io_names.CROPS: {0: io_names.BATCH_AXIS}, io_names.CROP_SCORES: {0: io_names.BATCH_AXIS},
                          io_names.CROP_EMBEDDINGS: {0: io_names.BATCH_AXIS}},
            do_constant_folding=True)


# Backbone stages in input order, as torch.onnx names the nodes of a timm EfficientNet: the stem
# (conv_stem + bn1), then blocks.0 ... blocks.N. The mixed-precision fallback keeps a prefix of these
# in FP32 (see convert_fp16).
_STEM = re.compile(r"^/model/(conv_stem|bn1)(/|$)")
_BLOCK = re.compile(r"^/model/blocks\.(\d+)/")


def backbone_stages(model: onnx.ModelProto) -> list[tuple[str, list[str]]]:
    """[(stage name, node names)] from the input side: ("stem", ...), ("blocks.0", ...), ...
    Empty for a backbone whose nodes are not named like timm's EfficientNet family."""
    stages: dict[str, list[str]] = {}
    for node in model.graph.node:
        if _STEM.match(node.name):
            stages.setdefault("stem", []).append(node.name)
        elif m := _BLOCK.match(node.name):
            stages.setdefault(f"blocks.{m.group(1)}", []).append(node.name)
    order = sorted(stages, key=lambda k: -1 if k == "stem" else int(k.split(".")[1]))
    return [(k, stages[k]) for k in order]


def stage_count(model) -> int:
    """How many stages backbone_stages() will find in the export of this PyTorch student (stem
    + each of timm's EfficientNet blocks; 0 for other backbones), known before exporting."""
    backbone = model.backbone
    if not hasattr(backbone, "blocks") or not hasattr(backbone, "conv_stem"):
        return 0
    return 1 + len(backbone.blocks)


def convert_fp16(src: Path, dst: Path, keep_fp32: tuple[str, ...] = ()) -> None:
    """FP16 weights and compute with onnxconverter-common; FP16 input, FP32 outputs.

    `keep_fp32`: names of nodes that stay FP32 (their weights too), with Casts at the boundary.
    Why: a quality model reads faint high-frequency signal, and FP16 rounding of the full-resolution
    early activations is exactly that kind of signal; keeping the first stages in FP32 is the
    cheapest place to buy parity back (the export measures it; see export/to_onnx.py).
    """
    import warnings

    from onnxconverter_common import float16

    model = onnx.load(str(src))
    if keep_fp32:
        _unshare_initializers(model, set(keep_fp32))
        # Shape inference's value_info from the FP32 graph would pin boundary tensors to FP32 and
        # contradict the Casts the converter inserts; it is recomputed by the converter.
        del model.graph.value_info[:]
    with warnings.catch_warnings():
        # Weights below FP16's range (|w| < 1e-7) are clamped; the parity report measures the effect.
        warnings.filterwarnings("ignore", message=".*will be truncated to.*")
        fp16 = float16.convert_float_to_float16(model, keep_io_types=False, disable_shape_infer=False,
                                                node_block_list=list(keep_fp32))
    # Outputs back to float32: append Casts so the outputs keep their names and dtype.
    graph = fp16.graph
    for out in graph.output:
        inner = out.name + "_fp16"
        for node in graph.node:
            node.output[:] = [inner if o == out.name else o for o in node.output]
            node.input[:] = [inner if i == out.name else i for i in node.input]
        graph.node.append(onnx.helper.make_node("Cast", [inner], [out.name], to=onnx.TensorProto.FLOAT,
                                                name=f"cast_{out.name}_to_fp32"))
        out.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    with atomic_path(dst) as tmp:
        onnx.save(fp16, str(tmp))


def _unshare_initializers(model: onnx.ModelProto, fp32_nodes: set[str]) -> None:
    """Give FP32-kept nodes their own copy of every initializer they read.

    onnxconverter-common converts an initializer once, so a constant shared between a kept node and
    an FP16 node (timm's ReLU6 Clip bounds 0 and 6 are one pair for the whole network) would reach
    the kept node as FP16 and fail type checking."""
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.name not in fp32_nodes:
            continue
        for k, name in enumerate(node.input):
            if name in inits:
                copy = onnx.TensorProto()
                copy.CopyFrom(inits[name])
                copy.name = f"{name}__fp32__{node.name}"
                model.graph.initializer.append(copy)
                node.input[k] = copy.name
    used = {i for n in model.graph.node for i in n.input}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def slim(path: Path) -> dict:
    """Clean the graph with onnxslim (constant folding, dead-node removal, fusions); returns
    node counts before and after. Kept only when it removes nodes."""
    import onnxslim

    before = onnx.load(str(path))
    slimmed = onnxslim.slim(before)
    n_before, n_after = len(before.graph.node), len(slimmed.graph.node)
    if n_after < n_before:
        with atomic_path(path) as tmp:
            onnx.save(slimmed, str(tmp))
    return {"nodes_before": n_before, "nodes_after": min(n_before, n_after), "applied": n_after < n_before}


def check(path: Path) -> dict:
    """onnx.checker + strict shape inference; returns the I/O signature."""
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)

    def sig(values):
        out = {}
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_param or d.dim_value for d in t.shape.dim]
            out[v.name] = {"dtype": onnx.TensorProto.DataType.Name(t.elem_type).lower(), "shape": dims}
        return out

    return {"inputs": sig(model.graph.input), "outputs": sig(model.graph.output),
            "opset": model.opset_import[0].version, "nodes": len(model.graph.node),
            "bytes": path.stat().st_size}
