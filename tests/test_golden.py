"""The golden-score guard (tests/golden.py; checked at every stage in tests/test_serving.py) notices
a change of the bundled weights: a copy with one weight tensor nudged by 1 % moves the PyTorch
stage beyond its tolerance, and the unchanged bundle stays within it."""
import shutil

import numpy as np
from safetensors.numpy import load_file, save_file

import golden
from conftest import BUNDLE


def test_fixture_images_are_the_documented_ones():
    imgs = [golden.load(i) for i in golden.ITEMS]
    assert len(imgs) == 10 and all(im.dtype == np.uint8 and im.ndim == 3 and im.shape[2] == 3 for im in imgs)
    assert not np.array_equal(imgs[4], golden.load("skimage:astronaut:none:0"))   # jpeg level 4 really applied


def test_guard_fails_when_the_weights_change(tmp_path):
    expected = np.array([golden.read()[i]["torch_fp32"] for i in golden.ITEMS])
    assert np.abs(golden.torch_scores() - expected).max() <= golden.TOLERANCE["torch_fp32"]
    changed = tmp_path / "changed"
    shutil.copytree(BUNDLE, changed)
    weights = load_file(str(changed / "model.safetensors"))
    name = max((k for k in weights if weights[k].ndim == 2), key=lambda k: weights[k].size)   # the largest matrix
    weights[name] = (weights[name].astype(np.float32) * 1.01).astype(weights[name].dtype)
    save_file(weights, str(changed / "model.safetensors"))
    moved = np.abs(golden.torch_scores(changed) - expected).max()
    assert moved > golden.TOLERANCE["torch_fp32"], moved
