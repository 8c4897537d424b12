"""The golden-score guard (tests/golden.py; checked at every stage in tests/test_serving.py) notices
a change of the bundled weights: a copy with one weight tensor nudged by 1 % moves the PyTorch
stage beyond its tolerance, and the unchanged bundle stays within it."""
import numpy as np

import golden
from conftest import another_student


def test_fixture_images_are_the_documented_ones():
    imgs = [golden.load(i) for i in golden.ITEMS]
    assert len(imgs) == 10 and all(im.dtype == np.uint8 and im.ndim == 3 and im.shape[2] == 3 for im in imgs)
    assert not np.array_equal(imgs[4], golden.load("skimage:astronaut:none:0"))   # jpeg level 4 really applied


def test_guard_fails_when_the_weights_change(tmp_path):
    expected = np.array([golden.read()[i]["torch_fp32"] for i in golden.ITEMS])
    assert np.abs(golden.torch_scores() - expected).max() <= golden.TOLERANCE["torch_fp32"]
    changed = another_student(tmp_path / "changed")   # the largest weight matrix x 1.01
    moved = np.abs(golden.torch_scores(changed) - expected).max()
    assert moved > golden.TOLERANCE["torch_fp32"], moved
