"""qfm_match (CPU): k nearest references of each quality embedding, through ONNX Runtime on the
standard-ops match model (export/match_onnx.py) with the bank as its second input, so replacing
bank.safetensors and reloading the model is all a new bank takes.

EMBEDDING (FP32, [N, D]) -> NEIGHBOR_IDS (INT64, [N, k]), NEIGHBOR_SCORES (FP32, [N, k]),
NEIGHBOR_DISTANCES (FP32, [N, k]) (the output names of the native-backend variant too).

The bank must come from the student this repository serves, with its crop plan
(student_identity.json beside this file): another bank lives in another embedding space, so the
model refuses to load, naming both identities.
"""
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

from qfm_core import io_names
from qfm_core.bank import BankMismatch, check_identity, load_bank
from qfm_core.crop_plan import CropPlan


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        here = Path(__file__).parent
        bank = load_bank(here / params.get("bank_file", "bank.safetensors"))   # clear errors on bad files
        identity = json.loads((here / "student_identity.json").read_text())
        try:
            check_identity(bank, identity["student_sha256"], CropPlan.from_dict(identity["crop_plan"]),
                           f"model {args['model_name']}")
        except BankMismatch as e:
            raise pb_utils.TritonModelException(str(e)) from e
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

    def _answer(self, request):
        q = pb_utils.get_input_tensor_by_name(request, io_names.MATCH_QUERY).as_numpy().astype(np.float32)
        if q.ndim != 2 or q.shape[1] != self.bank.shape[1]:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(
                f"{io_names.MATCH_QUERY} must be [N, {self.bank.shape[1]}], got {list(q.shape)}",
                pb_utils.TritonError.INVALID_ARG))
        dist, idx = self.session.run([io_names.NEIGHBOR_DISTANCES, io_names.NEIGHBOR_INDEX],
                                     {io_names.MATCH_QUERY: q, io_names.MATCH_BANK: self.bank})
        return pb_utils.InferenceResponse([
            pb_utils.Tensor(io_names.NEIGHBOR_IDS, self.bank_ids[idx]),
            pb_utils.Tensor(io_names.NEIGHBOR_SCORES, self.bank_scores[idx]),
            pb_utils.Tensor(io_names.NEIGHBOR_DISTANCES, dist.astype(np.float32))])

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self._answer(request))
            except Exception as e:   # this request's own error; the others are still answered
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    f"{type(e).__name__}: {e}", pb_utils.TritonError.INTERNAL)))
        return responses
