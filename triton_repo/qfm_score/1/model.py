"""qfm_score: encoded image bytes -> one score and quality embedding per image.

IMAGE (BYTES, [N]) -> SCORE (FP32, [N]), EMBEDDING (FP32, [N, D]), ITEM_ERROR (BYTES, [N]).

For each image: decode the untrusted bytes under this model's limits (qfm_core.image_guard: a
format allow-list, bytes, pixels, side, aspect; EXIF orientation; odd modes to RGB), cut the crops
of the student's crop plan (student_identity.json beside this file, copied from the checkpoint),
run them through qfm_student, and average per image. The crops go to qfm_student as BLS requests
of at most `chunk_crops` crops (its max_batch_size), several in flight while the next images
decode, so a request of any size up to RequestLimits.max_images is answered with bounded memory
and the student's dynamic batcher still merges chunks of concurrent requests.

Crops are raw UINT8 pixels where the student normalises in its graph (CPU targets), else
normalised FP16 / FP32 (the `crop_dtype` parameter, from the student's input type).

Quality metrics (qfm_core.served_metrics) go to Triton's metrics port: a histogram of the scores
served, item errors and refused requests by code, a histogram of images per request.

One bad image never fails its request: it gets ITEM_ERROR "CODE: message", SCORE NaN and a zero
EMBEDDING (void). One bad request never fails the others of the same execution: it gets its own
error response (INVALID_ARG when it is over the request limits, INTERNAL otherwise).
"""
import asyncio
import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from qfm_core import io_names, served_metrics
from qfm_core.aggregate import mean_per_image
from qfm_core.crop_plan import CropPlan
from qfm_core.crops import channels_first
from qfm_core.image_guard import ImageRejected, Limits, RequestLimits, decode_untrusted

CROP_DTYPES = {"UINT8": np.uint8, "FP16": np.float16, "FP32": np.float32}


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        identity = json.loads((Path(__file__).parent / "student_identity.json").read_text())
        self.plan = CropPlan.from_dict(identity["crop_plan"])
        self.crop_dtype = CROP_DTYPES[params["crop_dtype"]]
        self.chunk_crops = int(params["chunk_crops"])
        self.in_flight = int(params.get("chunks_in_flight", "2"))
        if self.chunk_crops < self.plan.crops_per_image:
            raise pb_utils.TritonModelException(f"chunk_crops {self.chunk_crops} < {self.plan.crops_per_image} "
                                                "crops of one image: raise the student's max_batch_size")
        self.dim = pb_utils.get_output_config_by_name(config, io_names.EMBEDDING)["dims"][-1]
        image_defaults, request_defaults = Limits(), RequestLimits()
        self.limits = Limits(max_bytes=int(params.get("max_image_bytes", image_defaults.max_bytes)),
                             max_pixels=int(params.get("max_pixels", image_defaults.max_pixels)),
                             min_side=int(params.get("min_side", image_defaults.min_side)),
                             max_aspect=float(params.get("max_aspect", image_defaults.max_aspect)))
        self._metrics(args)
        self.request_limits = RequestLimits(
            max_images=int(params.get("max_images_per_request", request_defaults.max_images)),
            max_bytes=int(params.get("max_request_bytes", request_defaults.max_bytes)))

    def _metrics(self, args) -> None:
        labels = {"model": args.get("model_name", io_names.SCORE_MODEL), "version": args.get("model_version", "1")}
        families = {
            served_metrics.SCORE: pb_utils.MetricFamily(
                name=served_metrics.SCORE, description="Scores served (0..100), one per image",
                kind=pb_utils.MetricFamily.HISTOGRAM),
            served_metrics.ITEM_ERRORS: pb_utils.MetricFamily(
                name=served_metrics.ITEM_ERRORS, description="Images given an ITEM_ERROR, and refused requests, by code",
                kind=pb_utils.MetricFamily.COUNTER),
            served_metrics.IMAGES_PER_REQUEST: pb_utils.MetricFamily(
                name=served_metrics.IMAGES_PER_REQUEST, description="Images per served request",
                kind=pb_utils.MetricFamily.HISTOGRAM)}
        self._families = families   # a Metric must not outlive its family
        self._score = families[served_metrics.SCORE].Metric(labels=labels, buckets=served_metrics.SCORE_BUCKETS)
        self._images = families[served_metrics.IMAGES_PER_REQUEST].Metric(labels=labels,
                                                                          buckets=served_metrics.IMAGES_BUCKETS)
        self._labels, self._errors = labels, {}

    def _count_error(self, code: str) -> None:
        if code not in self._errors:
            self._errors[code] = self._families[served_metrics.ITEM_ERRORS].Metric(labels={**self._labels, "code": code})
        self._errors[code].increment(1)

    def _crops(self, data: bytes) -> np.ndarray:
        crops = self.plan.crops(decode_untrusted(data, self.limits))
        if self.crop_dtype == np.uint8:
            return np.ascontiguousarray(channels_first(crops))
        return self.plan.normalize(crops).astype(self.crop_dtype)

    def _submit(self, crops: list) -> "asyncio.Future":
        request = pb_utils.InferenceRequest(
            model_name=io_names.STUDENT_MODEL,
            requested_output_names=[io_names.CROP_SCORES, io_names.CROP_EMBEDDINGS],
            inputs=[pb_utils.Tensor(io_names.CROPS, np.concatenate(crops))])
        # async_exec hands the request to an executor thread at once: the student runs while
        # this coroutine goes on decoding the next images.
        return asyncio.ensure_future(request.async_exec())

    @staticmethod
    async def _collect(pending, scores, embeddings) -> None:
        rows, counts, future = pending
        response = await future
        if response.has_error():
            raise RuntimeError(f"scoring crops failed: {response.error().message()}")
        crop_scores = pb_utils.get_output_tensor_by_name(response, io_names.CROP_SCORES).as_numpy().reshape(-1)
        crop_embs = pb_utils.get_output_tensor_by_name(response, io_names.CROP_EMBEDDINGS).as_numpy()
        scores[rows], embeddings[rows] = mean_per_image(crop_scores, crop_embs, np.asarray(counts))

    async def _answer(self, request):
        blobs = pb_utils.get_input_tensor_by_name(request, io_names.IMAGE).as_numpy().reshape(-1)
        refusal = self.request_limits.refusal(len(blobs), sum(len(b) for b in blobs))
        if refusal:
            self._count_error(served_metrics.REQUEST_REFUSED)
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(refusal, pb_utils.TritonError.INVALID_ARG))
        n = len(blobs)
        scores = np.full(n, np.nan, np.float32)
        embeddings = np.zeros((n, self.dim), np.float32)
        problems = [""] * n
        pending, chunk, rows, counts, in_chunk = [], [], [], [], 0
        for i, blob in enumerate(blobs):
            try:
                crops = self._crops(bytes(blob))
            except ImageRejected as e:
                problems[i] = str(e)
                continue
            except Exception as e:   # never let one image take the request (or the model) down
                problems[i] = f"CORRUPT: {type(e).__name__}: {e}"
                continue
            if in_chunk + len(crops) > self.chunk_crops:
                pending.append((rows, counts, self._submit(chunk)))
                chunk, rows, counts, in_chunk = [], [], [], 0
                if len(pending) > self.in_flight:
                    await self._collect(pending.pop(0), scores, embeddings)
            chunk.append(crops)
            rows.append(i)
            counts.append(len(crops))
            in_chunk += len(crops)
        if chunk:
            pending.append((rows, counts, self._submit(chunk)))
        for p in pending:
            await self._collect(p, scores, embeddings)
        self._images.observe(n)
        for score, problem in zip(scores, problems):
            if problem:
                self._count_error(problem.partition(":")[0])
            else:
                self._score.observe(float(score))
        return pb_utils.InferenceResponse([
            pb_utils.Tensor(io_names.SCORE, scores), pb_utils.Tensor(io_names.EMBEDDING, embeddings),
            pb_utils.Tensor(io_names.ITEM_ERROR, np.array([p.encode() for p in problems], dtype=np.object_))])

    async def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(await self._answer(request))
            except Exception as e:   # this request's own error; the others are still answered
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    f"{type(e).__name__}: {e}", pb_utils.TritonError.INTERNAL)))
        return responses
