"""Our CUDA pairwise-distance and fused top-k kernels: source, NVRTC build, launcher, reference."""
