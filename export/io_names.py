"""Tensor names of the exported student. The same strings appear in the ONNX files, the
TensorRT engines, Triton's config.pbtxt files and the client; change them here only."""

INPUT = "image"  # float, (batch, 3, H, W), normalised with the checkpoint's mean/std
SCORE = "score"  # float32, (batch,), 0..100, higher = better
EMBEDDING = "embedding"  # float32, (batch, D) quality embedding
BATCH_AXIS = "batch"
