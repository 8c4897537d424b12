"""qfm_aggregate: per-image mean of crop scores and crop embeddings.

CROP_SCORES (FP32, [K, 1]), CROP_EMBEDDINGS (FP32, [K, D]), CROP_COUNTS (INT32, [N]) with
sum(CROP_COUNTS) == K -> SCORE (FP32, [N]), EMBEDDING (FP32, [N, D]).
"""
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            scores = pb_utils.get_input_tensor_by_name(request, "CROP_SCORES").as_numpy().reshape(-1)
            embs = pb_utils.get_input_tensor_by_name(request, "CROP_EMBEDDINGS").as_numpy()
            counts = pb_utils.get_input_tensor_by_name(request, "CROP_COUNTS").as_numpy().reshape(-1)
            if counts.sum() != len(scores) or len(scores) != len(embs) or (counts <= 0).any():
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    f"crop counts {counts.tolist()} do not match {len(scores)} crop scores",
                    pb_utils.TritonError.INVALID_ARG)))
                continue
            owner = np.repeat(np.arange(len(counts)), counts)
            score = np.bincount(owner, weights=scores, minlength=len(counts)) / counts
            emb = np.zeros((len(counts), embs.shape[1]), np.float64)
            np.add.at(emb, owner, embs)
            emb /= counts[:, None]
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("SCORE", score.astype(np.float32)),
                                                         pb_utils.Tensor("EMBEDDING", emb.astype(np.float32))]))
        return responses
