"""Tensor names of the exported student. The same strings appear in the ONNX files, the
TensorRT engines, Triton's config.pbtxt files and the client; change them here only."""

INPUT = "image"  # (batch, 3, H, W): float normalised with the checkpoint's mean/std, or raw uint8 pixels
                 # in the CPU serving model (onnx_export.with_uint8_input normalises in-graph)
SCORE = "score"  # float32, (batch,), 0..100, higher = better
EMBEDDING = "embedding"  # float32, (batch, D) quality embedding
BATCH_AXIS = "batch"
