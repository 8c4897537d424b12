"""qfm_match (CPU): k nearest references of each quality embedding, through ONNX Runtime on the
standard-ops match model (export/match_onnx.py) with the bank as its second input, so replacing
bank.safetensors and reloading the model is all a new bank takes.

EMBEDDING (FP32, [N, D]) -> neighbor_ids (INT64, [N, k]), neighbor_scores (FP32, [N, k]),
neighbor_distances (FP32, [N, k]) (the output names of the native-backend variant too).
"""
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils
from export.bank import load_bank


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        here = Path(__file__).parent
        bank = load_bank(here / params.get("bank_file", "bank.safetensors"))   # clear errors on bad files
        self.bank = np.ascontiguousarray(bank["embeddings"], np.float32)
        self.bank_scores, self.bank_ids = bank["scores"].astype(np.float32), bank["ids"].astype(np.int64)
        onnx_path = here / params.get("onnx_file", "match.onnx")
        if not onnx_path.exists():
            raise pb_utils.TritonModelException(f"{onnx_path} is missing: regenerate the repository with "
                                                "export/triton_repo.py")
        # One thread, no spin-waiting: a (N, 384) x (384, M) product is tiny, and ONNX Runtime's
        # default pool (one spinning thread per core) burned 15.7 CPU-ms per image here, taken
        # from the student (benchmarks/bench_report.py, "CPU ms per image").
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        k = self.session.get_outputs()[1].shape[1]
        if len(self.bank) < k:
            raise pb_utils.TritonModelException(f"bank has {len(self.bank)} entries, fewer than k={k}")

    def execute(self, requests):
        responses = []
        for request in requests:
            q = pb_utils.get_input_tensor_by_name(request, "EMBEDDING").as_numpy().astype(np.float32)
            if q.ndim != 2 or q.shape[1] != self.bank.shape[1]:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    f"EMBEDDING must be [N, {self.bank.shape[1]}], got {list(q.shape)}",
                    pb_utils.TritonError.INVALID_ARG)))
                continue
            dist, idx = self.session.run(["neighbor_distances", "neighbor_index"], {"query": q, "bank": self.bank})
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("neighbor_ids", self.bank_ids[idx]),
                pb_utils.Tensor("neighbor_scores", self.bank_scores[idx]),
                pb_utils.Tensor("neighbor_distances", dist.astype(np.float32))]))
        return responses
