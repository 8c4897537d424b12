import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
LIVEC_DEV = REPO.parent / "shared" / "data" / "livec_dev"


def write_image(path: Path, size=(40, 32), seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="session", autouse=True)
def _threads():
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def livec_dev():
    if not (LIVEC_DEV / "mos.csv").exists():
        pytest.skip(f"real LIVEC dev subset not found at {LIVEC_DEV}")
    return LIVEC_DEV
