"""qfm_student (CPU, pip-installed Triton): the exported ONNX student run by ONNX Runtime inside
the Python backend, since that server build has no onnxruntime backend. NGC containers use the
native onnxruntime / tensorrt_plan backends instead (same tensor names, same config source).

CROPS (UINT8 raw pixels or FP32 normalised, as the ONNX file declares, [batch, 3, S, S]) ->
CROP_SCORES (FP32, [batch, 1]), CROP_EMBEDDINGS (FP32, [batch, D]).
Dynamic batching merges crops from concurrent requests into one ONNX Runtime call; a request
whose crops do not fit the graph, or whose share of a failed call fails again alone, gets its
own error and the others of the batch are answered.
"""
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

from qfm_core import io_names


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        # Dynamic batching hands ONNX Runtime a different batch size almost every call; its CPU
        # arena keeps the largest buffers it has held, so under 64-client load this process grows
        # by ~1 GB in the first minute, then flattens (bounded by the largest batch, 512 crops).
        # Measured: with the arena off RSS stays flat but throughput fell 97 -> 80 img/s, so it
        # stays on; set parameter cpu_mem_arena "false" where memory matters more than speed.
        opts.enable_cpu_mem_arena = params.get("cpu_mem_arena", "true") == "true"
        # Spinning intra-op threads keep a core busy between batches, which the preprocess model
        # needs for decoding; measured in make bench (benchmarks/bench_report.py).
        opts.add_session_config_entry("session.intra_op.allow_spinning", params.get("allow_spinning", "0"))
        path = Path(__file__).parent / params.get("onnx_file", "model.onnx")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        graph_input = self.session.get_inputs()[0]
        self.input_dtype = {"tensor(float16)": np.float16, "tensor(uint8)": np.uint8}.get(graph_input.type, np.float32)
        self.crop_shape = list(graph_input.shape[1:])

    def _check(self, request) -> np.ndarray:
        crops = pb_utils.get_input_tensor_by_name(request, io_names.CROPS).as_numpy()
        if crops.ndim != 4 or list(crops.shape[1:]) != self.crop_shape:
            raise ValueError(f"{io_names.CROPS} must be [batch, {', '.join(map(str, self.crop_shape))}], "
                             f"got {list(crops.shape)}")
        return crops.astype(self.input_dtype, copy=False)

    def _run(self, crops: np.ndarray):
        return self.session.run([io_names.CROP_SCORES, io_names.CROP_EMBEDDINGS], {io_names.CROPS: crops})

    @staticmethod
    def _response(score, embedding):
        return pb_utils.InferenceResponse([
            pb_utils.Tensor(io_names.CROP_SCORES, score.reshape(-1, 1).astype(np.float32)),
            pb_utils.Tensor(io_names.CROP_EMBEDDINGS, np.ascontiguousarray(embedding, np.float32))])

    @staticmethod
    def _error(e: Exception, code):
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(e).__name__}: {e}", code))

    def execute(self, requests):
        # One ONNX Runtime call for every well-formed request the dynamic batcher handed us, then
        # split; if that call fails, each request is run alone so only the culprit fails.
        responses, arrays = [None] * len(requests), {}
        for i, r in enumerate(requests):
            try:
                arrays[i] = self._check(r)
            except Exception as e:
                responses[i] = self._error(e, pb_utils.TritonError.INVALID_ARG)
        if arrays:
            try:
                score, embedding = self._run(np.concatenate(list(arrays.values())))
                start = 0
                for i, a in arrays.items():
                    responses[i] = self._response(score[start:start + len(a)], embedding[start:start + len(a)])
                    start += len(a)
            except Exception:
                for i, a in arrays.items():
                    try:
                        responses[i] = self._response(*self._run(a))
                    except Exception as e:
                        responses[i] = self._error(e, pb_utils.TritonError.INTERNAL)
        return responses
