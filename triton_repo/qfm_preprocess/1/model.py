"""qfm_preprocess: encoded image bytes -> the student's evaluation crops.

IMAGE (BYTES, [N]) -> CROPS (FP32 or FP16, [N*G*G, 3, S, S]) and CROP_COUNTS (INT32, [N]).
Decoding applies the EXIF orientation and converts to RGB; crops are the same n x n grid at
native resolution that training/evaluate.py averages over (training.transforms), normalised with
the checkpoint's mean/std (student_config.json beside this file). A request with an undecodable
image gets its own INVALID_ARG error; the other requests in the batch are unaffected.
"""
import io
import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from PIL import Image

from training.transforms import grid_crops, load_rgb, normalize

# Decompression-bomb guard: Pillow raises above this many pixels (a 12k x 12k photo is fine).
Image.MAX_IMAGE_PIXELS = 150_000_000


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        student = json.loads((Path(__file__).parent / "student_config.json").read_text())["student"]
        self.size, self.mean, self.std = student["input_size"], student["mean"], student["std"]
        self.grid = int(params.get("grid", "3"))
        crops_cfg = pb_utils.get_output_config_by_name(config, "CROPS")
        self.crop_dtype = pb_utils.triton_string_to_numpy(crops_cfg["data_type"])

    def _crops(self, data: bytes) -> np.ndarray:
        rgb = load_rgb(io.BytesIO(data))
        return normalize(grid_crops(rgb, self.size, self.grid), self.mean, self.std)

    def execute(self, requests):
        responses = []
        for request in requests:
            blobs = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy().reshape(-1)
            try:
                crops = [self._crops(bytes(b)) for b in blobs]
            except Exception as e:  # Pillow raises many types for corrupt or hostile files
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    f"cannot decode image: {type(e).__name__}: {e}", pb_utils.TritonError.INVALID_ARG)))
                continue
            counts = np.asarray([len(c) for c in crops], np.int32)
            stacked = np.concatenate(crops).astype(self.crop_dtype) if crops else \
                np.zeros((0, 3, self.size, self.size), self.crop_dtype)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("CROPS", stacked),
                                                         pb_utils.Tensor("CROP_COUNTS", counts)]))
        return responses
