"""Training really trains, writes its run folder, and resumes bit-identically after a crash."""
import json

import pytest
import torch
from safetensors.torch import load_file

from training import trainer
from training.config import load_config
from training.data.registry import load_dataset

CFG = """
seed: 3
student: {{name: qfm_lite0, pretrained: none, frozen_stages: 5, num_queries: 2}}
data:
  train: [{{dataset: {train}}}]
  val: {{dataset: {val}}}
  eval_grid: 1
train: {{epochs: 2, batch_size: 4, warmup_steps: 1, threads: 2}}
qfm: {{min_memory: 4, tau: 15.0, memory_size: 6}}
"""


@pytest.fixture
def tiny_livec(tmp_path, livec_dev):
    rows = (livec_dev / "mos.csv").read_text().splitlines()
    for name, part in (("train", rows[1:13]), ("val", rows[13:19])):
        lines = [rows[0]] + [f"{livec_dev}/{r}" for r in part]
        (tmp_path / f"{name}.csv").write_text("\n".join(lines) + "\n")
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(CFG.format(train=tmp_path / "train.csv", val=tmp_path / "val.csv"))
    return load_config(cfg_path), [(load_dataset(str(tmp_path / "train.csv")), None)], load_dataset(str(tmp_path / "val.csv"))


@pytest.mark.slow
def test_resume_after_interruption_is_bit_identical(tmp_path, tiny_livec, monkeypatch):
    cfg, sources, val = tiny_livec
    full = trainer.fit(cfg, tmp_path / "full", sources, val)
    assert [h["epoch"] for h in full["history"]] == [1, 2]
    for f in ("checkpoint/model.safetensors", "checkpoint/config.json", "state/trainer.json",
              "state/optimizer.safetensors", "state/memory.safetensors", "metrics.json", "curve.png"):
        assert (tmp_path / "full" / f).exists(), f

    real_plot = trainer.plot_curves

    def crash_after_first_epoch(history, path):
        real_plot(history, path)
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C after epoch 1 was saved

    monkeypatch.setattr(trainer, "plot_curves", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(cfg, tmp_path / "resumed", sources, val)
    assert json.loads((tmp_path / "resumed" / "state" / "trainer.json").read_text())["trainer"]["epoch"] == 1
    monkeypatch.setattr(trainer, "plot_curves", real_plot)
    resumed = trainer.fit(cfg, tmp_path / "resumed", sources, val)

    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    a = load_file(str(tmp_path / "full" / "checkpoint" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "checkpoint" / "model.safetensors"))
    changed = [k for k in a if not torch.equal(a[k], b[k])]
    assert not changed, f"resumed weights differ from an uninterrupted run: {changed[:5]}"
    assert resumed["val"]["srcc"] == full["val"]["srcc"]


@pytest.mark.slow
def test_training_moves_weights_and_uses_qfm(tmp_path, tiny_livec):
    cfg, sources, val = tiny_livec
    torch.manual_seed(cfg["seed"])  # fit() builds its model under the same seed
    model0 = trainer.build_student(cfg)
    before = {k: v.clone() for k, v in model0.state_dict().items()}
    x = torch.randn(4, 3, 224, 224)
    y = torch.tensor([10.0, 20.0, 30.0, 40.0])
    from training.qfm.memory import MemoryBank

    mem = MemoryBank(8, 384)
    _, logs = trainer.qfm_step(model0, x, y, mem, cfg)
    assert "pert" not in logs and mem.size == 4  # memory too small yet: no perturbation
    loss, logs = trainer.qfm_step(model0, x, y, mem, cfg)
    assert logs["matched"] > 0 and "pert" in logs and "cons" in logs
    loss.backward()
    assert model0.gate.fc1.weight.grad is not None and model0.gate.fc1.weight.grad.abs().sum() > 0
    trainer.fit(cfg, tmp_path / "run", sources, val)
    after = load_file(str(tmp_path / "run" / "checkpoint" / "model.safetensors"))
    assert not torch.equal(after["score_head.weight"], before["score_head.weight"])
    assert torch.equal(after["backbone.conv_stem.weight"], before["backbone.conv_stem.weight"])  # frozen


def test_dither_moves_pixels_by_at_most_one_grey_level(tiny_livec):
    """data.dither: half the crops get +-1 grey level per pixel, labels unchanged; dither 0 draws
    nothing extra from the random stream, so runs made before the option crop identically."""
    import numpy as np

    from training.datasets import ImageCache, RandomCropDataset

    cfg, sources, _ = tiny_livec
    cache = ImageCache(sources[0][0])
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    plain = RandomCropDataset(cache, 64, mean, std, seed=1)
    dithered = RandomCropDataset(cache, 64, mean, std, seed=1, dither=1)
    moved_any = 0
    for i in range(len(cache)):
        (a, ya), (b, yb) = plain[i], dithered[i]
        grey = ((b - a) * 0.5 * 255).numpy()  # back to grey levels (std 0.5)
        assert ya == yb and np.abs(grey).max() <= 1.0 + 1e-3
        moved_any += bool(np.abs(grey).max() > 0.5)
    assert 0 < moved_any < len(cache)  # about half the crops


def test_dither_consistency_term_is_the_score_gap_of_a_dithered_copy():
    """loss.w_dither adds exactly w * smooth-L1(score(dithered crop), score(crop)) on the 0..1
    scale, and its gradient reaches the student (the clean score is the fixed target)."""
    import copy

    from training.config import DEFAULTS
    from training.models import create_student

    torch.manual_seed(0)
    model = create_student("qfm_lite0", pretrained="none", num_queries=2).eval()  # eval: no dropout noise
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([30.0, 70.0])
    cfg = copy.deepcopy(DEFAULTS)
    cfg["qfm"]["enabled"] = False
    base, _ = trainer.qfm_step(model, x, y, None, cfg)
    cfg["loss"]["w_dither"] = 2.0
    loss, logs = trainer.qfm_step(model, x, y, None, cfg)
    assert logs["dither"] > 0
    assert loss.item() == pytest.approx(base.item() + 2.0 * logs["dither"], rel=1e-5)
    cfg["loss"].update(w_clean=0.0, w_plcc=0.0)  # the dither term alone: its gradient must reach the head
    only, logs = trainer.qfm_step(model, x, y, None, cfg)
    assert only.item() == pytest.approx(2.0 * logs["dither"], rel=1e-5)
    only.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.score_head.parameters())
