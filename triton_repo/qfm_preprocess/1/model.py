"""qfm_preprocess: encoded image bytes -> the student's evaluation crops.

IMAGE (BYTES, [N]) -> CROPS (UINT8, FP32 or FP16, [K, 3, S, S]), CROP_COUNTS (INT32, [N]) and
ITEM_ERROR (BYTES, [N]). The bytes come from untrusted users: training/image_guard.py decodes
them under the limits in this model's config parameters (bytes, pixels, side, aspect; a format
allow-list), applies the EXIF orientation and normalises odd modes to RGB. Crops are the same
n x n grid at native resolution that training/evaluate.py averages over. UINT8 crops are the raw
pixels (the CPU student normalises in its graph); float crops are normalised here with the
checkpoint's mean/std (student_config.json beside this file).

One bad image never fails its request: it gets ITEM_ERROR "CODE: message" and a single zero
crop (so every later model sees the same shapes and no zero-sized batch), and its outputs are
void. Only a request whose total size is over max_request_bytes is refused as a whole.
"""
import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from training.image_guard import ImageRejected, Limits, decode_untrusted
from training.transforms import channels_first, grid_crops, normalize


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        student = json.loads((Path(__file__).parent / "student_config.json").read_text())["student"]
        self.size, self.mean, self.std = student["input_size"], student["mean"], student["std"]
        self.grid = int(params.get("grid", "3"))
        defaults = Limits()
        self.limits = Limits(max_bytes=int(params.get("max_image_bytes", defaults.max_bytes)),
                             max_pixels=int(params.get("max_pixels", defaults.max_pixels)),
                             min_side=int(params.get("min_side", defaults.min_side)),
                             max_aspect=float(params.get("max_aspect", defaults.max_aspect)))
        self.max_request_bytes = int(params.get("max_request_bytes", 256 * 1024 * 1024))
        crops_cfg = pb_utils.get_output_config_by_name(config, "CROPS")
        self.crop_dtype = pb_utils.triton_string_to_numpy(crops_cfg["data_type"])

    def _crops(self, data: bytes) -> tuple[np.ndarray, str]:
        try:
            crops = grid_crops(decode_untrusted(data, self.limits), self.size, self.grid)
            if self.crop_dtype == np.uint8:
                return channels_first(crops), ""
            return normalize(crops, self.mean, self.std), ""
        except ImageRejected as e:
            return np.zeros((1, 3, self.size, self.size), self.crop_dtype), str(e)
        except Exception as e:   # never let one image take the request (or the model) down
            return np.zeros((1, 3, self.size, self.size), self.crop_dtype), f"CORRUPT: {type(e).__name__}: {e}"

    def execute(self, requests):
        responses = []
        for request in requests:
            blobs = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy().reshape(-1)
            total = sum(len(b) for b in blobs)
            if total > self.max_request_bytes or len(blobs) == 0:
                why = f"request of {total} bytes > limit {self.max_request_bytes}" if len(blobs) else "no images"
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    why, pb_utils.TritonError.INVALID_ARG)))
                continue
            crops, problems = zip(*(self._crops(bytes(b)) for b in blobs))
            counts = np.asarray([len(c) for c in crops], np.int32)
            stacked = np.concatenate(crops).astype(self.crop_dtype, copy=False)
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("CROPS", stacked), pb_utils.Tensor("CROP_COUNTS", counts),
                pb_utils.Tensor("ITEM_ERROR", np.array([p.encode() for p in problems], dtype=np.object_))]))
        return responses
