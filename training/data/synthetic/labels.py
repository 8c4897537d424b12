"""MOS-like labels on 0..100 for the synthetic benchmark, from full-reference metrics (piq).

These are NOT human opinions: each label is the mean of four full-reference metrics (MS-SSIM,
VIF, FSIM, GMSD) between the distorted image and its pristine reference, each first mapped to
0..1 by a fixed affine map that sends a perfect copy to 1 and a "severely degraded" value to 0.
The maps are fixed constants (not fitted to the data), so a label never depends on which other
images were generated.
"""
from __future__ import annotations

import numpy as np
import piq
import torch

# metric -> (value mapped to 0, value mapped to 1); GMSD is a distance, so its map is decreasing.
METRIC_MAPS = {
    "ms_ssim": (0.4, 1.0),
    "vif": (0.0, 1.0),
    "fsim": (0.6, 1.0),
    "gmsd": (0.35, 0.0),
}


def _to_tensor(batch: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float() / 255.0


@torch.no_grad()
def full_reference_metrics(distorted: list[np.ndarray], reference: np.ndarray) -> dict[str, np.ndarray]:
    """Raw metric values of each distorted image against one reference (all HxWx3 uint8)."""
    x = _to_tensor(distorted)
    y = _to_tensor([reference]).expand_as(x)
    return {
        "ms_ssim": piq.multi_scale_ssim(x, y, data_range=1.0, reduction="none").numpy(),
        "vif": piq.vif_p(x, y, data_range=1.0, reduction="none").numpy(),
        "fsim": piq.fsim(x, y, data_range=1.0, reduction="none", chromatic=True).numpy(),
        "gmsd": piq.gmsd(x, y, data_range=1.0, reduction="none").numpy(),
    }


def metrics_to_label(metrics: dict[str, np.ndarray]) -> np.ndarray:
    """Ensemble label on 0..100 (higher = better) from raw metric values."""
    parts = []
    for name, (at_zero, at_one) in METRIC_MAPS.items():
        parts.append(np.clip((metrics[name] - at_zero) / (at_one - at_zero), 0.0, 1.0))
    return 100.0 * np.mean(parts, axis=0)
