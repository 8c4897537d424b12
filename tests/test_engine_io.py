"""Each gpu-ngc config lists exactly its engine's I/O tensors (names, dtypes, shapes), as Triton's
TensorRT backend requires. The engines' I/O is read from networks NVIDIA's own code builds here:
TensorRT-RTX's ONNX parser for the student and the ONNX match model, and TensorRT-RTX's network
API for the match engine's layers (export/build_match_engine.add_match_layers), with our two
plugins replaced by standard layers of the same types, since TensorRT-RTX has no plugins. The
configs are parsed with Triton's own ModelConfig schema (tritonclient's model_config_pb2)."""
import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from export import match_onnx
from qfm_core import io_names
from export.build_engine import EngineBuilder
from export.build_match_engine import add_match_layers
from export.triton_repo import match_config, student_config

trt_rtx = pytest.importorskip("tensorrt_rtx")
DIM, K, SIZE = 384, 5, 224


def _config(text: str):
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def _config_io(cfg) -> dict:
    """{name: (dtype, full shape)} of a config, the batch axis put back where Triton batches."""
    out = {}
    for t in list(cfg.input) + list(cfg.output):
        dims = list(t.reshape.shape) if t.HasField("reshape") else list(t.dims)
        shape = ([-1] if cfg.max_batch_size > 0 else []) + dims
        out[t.name] = (model_config_pb2.DataType.Name(t.data_type).removeprefix("TYPE_"), shape)
    return out


def _network_io(network) -> dict:
    tensors = [network.get_input(i) for i in range(network.num_inputs)]
    tensors += [network.get_output(i) for i in range(network.num_outputs)]
    return {t.name: (io_names.TRT_DTYPES[t.dtype.name], list(t.shape)) for t in tensors}


def _aot_build(builder, network):
    """TensorRT-RTX's ahead-of-time build for sm_89 of a match network (no GPU needed)."""
    config = builder.create_builder_config()
    config.num_compute_capabilities = 1
    config.set_compute_capability(trt_rtx.ComputeCapability.SM89, 0)
    profile = builder.create_optimization_profile()
    profile.set_shape(io_names.MATCH_QUERY, (1, DIM), (8, DIM), (64, DIM))
    config.add_optimization_profile(profile)
    return builder.build_serialized_network(network, config)


def _spec(inputs, outputs) -> dict:
    return {t.name: (t.dtype, list(t.shape)) for t in inputs + outputs}


def test_student_engine_config_lists_exactly_the_parsed_network_io(exported):
    builder = EngineBuilder("tensorrt-rtx")
    builder.create_network(exported / "qfm_student_fp16.onnx")
    engine_io = _network_io(builder.network)
    assert engine_io == _spec(*io_names.student_io(SIZE, DIM, "FP16"))
    cfg = _config(student_config("gpu-ngc", SIZE, DIM))
    assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size > 0
    assert _config_io(cfg) == engine_io


def _standard_knn(trt, k):
    """Stand-in for the two plugins, built from standard layers with the plugins' output types:
    (N, k) fp32 distances and int32 indices."""
    def knn(network, q16, bank16):
        dot = network.add_matrix_multiply(q16, trt.MatrixOperation.NONE, bank16, trt.MatrixOperation.TRANSPOSE)
        dist = network.add_cast(dot.get_output(0), trt.float32).get_output(0)
        top = network.add_topk(dist, trt.TopKOperation.MIN, k, 1 << 1)
        return top.get_output(0), top.get_output(1)
    return knn


def test_match_engine_config_lists_exactly_the_engine_network_io(tmp_path):
    trt = trt_rtx
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    rng = np.random.default_rng(0)
    bank = {"embeddings": rng.normal(size=(300, DIM)).astype(np.float32),
            "scores": rng.uniform(0, 100, 300).astype(np.float32), "ids": np.arange(300, dtype=np.int64)}
    keep = add_match_layers(trt, network, bank, K, _standard_knn(trt, K))
    engine_io = _network_io(network)
    assert engine_io == _spec(*io_names.match_io(DIM, K))
    cfg = _config(match_config("gpu-ngc", DIM, K, match_plan=True))
    assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 0
    assert _config_io(cfg) == engine_io
    # and the layers around the plugins compile (ahead of time, no GPU)
    assert _aot_build(builder, network) is not None
    del keep


def test_onnx_match_model_parses_builds_and_matches_its_config(tmp_path):
    """The ONNX match model (GPU without our kernel, and the CPU NGC target) through NVIDIA's ONNX
    parser, built ahead of time; its I/O is the engine's, so both configs agree."""
    rng = np.random.default_rng(1)
    model = match_onnx.build_match_model(DIM, K, bank=rng.normal(size=(200, DIM)).astype(np.float32),
                                         bank_scores=rng.uniform(0, 100, 200).astype(np.float32),
                                         bank_ids=np.arange(200, dtype=np.int64))
    path = tmp_path / "match.onnx"
    match_onnx.save(model, path)
    trt = trt_rtx
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(str(path)), [str(parser.get_error(i)) for i in range(parser.num_errors)]
    onnx_io = _network_io(network)
    assert onnx_io == _spec(*io_names.match_io(DIM, K))
    for target in ("gpu-ngc", "cpu-ngc"):
        cfg = _config(match_config(target, DIM, K))
        assert cfg.platform == "onnxruntime_onnx" and _config_io(cfg) == onnx_io
    assert _aot_build(builder, network) is not None
