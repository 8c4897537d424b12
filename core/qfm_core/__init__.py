"""qfm_core: what every stage of QFM-IQM shares, and the only code of ours the Triton models import.

io_names     every tensor and model name
crop_plan    how an image becomes the student's crops (travels with the weights)
crops        decoding and crops (NumPy / Pillow)
image_guard  decoding untrusted bytes under limits, with per-image error codes
aggregate    crops back to per-image scores and embeddings
bank         reference banks (safetensors) and their identity
files        atomic writes and hashes

Dependencies: numpy, Pillow, safetensors; never torch.
"""
