"""Training really trains, writes its run folder, and resumes bit-identically after a crash."""
import json

import pytest
import torch
from safetensors.torch import load_file

from training import run_folder, trainer
from training.qfm.step import qfm_step
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
    _, logs = qfm_step(model0, x, y, mem, cfg)
    assert "pert" not in logs and mem.size == 4  # memory too small yet: no perturbation
    loss, logs = qfm_step(model0, x, y, mem, cfg)
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
        (a, ya, _), (b, yb, _) = plain[i], dithered[i]
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
    base, _ = qfm_step(model, x, y, None, cfg)
    cfg["loss"]["w_dither"] = 2.0
    loss, logs = qfm_step(model, x, y, None, cfg)
    assert logs["dither"] > 0
    assert loss.item() == pytest.approx(base.item() + 2.0 * logs["dither"], rel=1e-5)
    cfg["loss"].update(w_clean=0.0, w_plcc=0.0)  # the dither term alone: its gradient must reach the head
    only, logs = qfm_step(model, x, y, None, cfg)
    assert only.item() == pytest.approx(2.0 * logs["dither"], rel=1e-5)
    only.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.score_head.parameters())


def test_within_reference_residual_ignores_a_per_photograph_offset():
    """labels: within_reference: adding any constant to all versions of one photograph (its
    pristine level) changes nothing; absolute items are plain pred - target; a grouped item alone
    in the batch is left out. Checked against a brute-force loop."""
    from training.qfm.losses import label_residual

    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(12, generator=g) * 100, torch.rand(12, generator=g) * 100
    group = torch.tensor([-1, 4, 4, 4, -1, 9, 9, 2, -1, 4, 7, 7])
    res, usable = label_residual(pred, target, group)
    for i in range(12):
        if group[i] < 0:
            assert res[i].item() == pytest.approx((pred[i] - target[i]).item(), abs=1e-4) and usable[i]
            continue
        same = group == group[i]
        want = (pred[i] - pred[same].mean()) - (target[i] - target[same].mean())
        assert res[i].item() == pytest.approx(want.item(), abs=1e-4)
        assert bool(usable[i]) == (same.sum() > 1)
    shifted = target + torch.where(group == 4, 25.0, 0.0) + torch.where(group == 7, -13.0, 0.0)
    res2, _ = label_residual(pred, shifted, group)
    assert torch.allclose(res, res2, atol=1e-4)
    moved = target.clone()
    moved[0] += 5.0   # an absolute label: its residual must follow
    assert label_residual(pred, moved, group)[0][0].item() == pytest.approx(res[0].item() - 5.0, abs=1e-4)


def _mixed_label_batch():
    """A small untrained student, default config and a batch of 6: two absolute-label items, then
    two within-reference pairs (photographs 0 and 1)."""
    import copy

    from training.config import DEFAULTS
    from training.models import create_student

    torch.manual_seed(0)
    model = create_student("qfm_lite0", pretrained="none", num_queries=2).eval()
    x = torch.randn(6, 3, 64, 64)
    y = torch.tensor([30.0, 70.0, 55.0, 80.0, 20.0, 40.0])
    group = torch.tensor([-1, -1, 0, 0, 1, 1])
    return model, x, y, group, copy.deepcopy(DEFAULTS)


def test_qfm_step_with_within_reference_groups():
    """The step's loss is unchanged when grouped labels move by a per-photograph constant and
    changes when an absolute label moves; without groups it is the plain loss."""
    model, x, y, group, cfg = _mixed_label_batch()
    cfg["qfm"]["enabled"] = False
    base, _ = qfm_step(model, x, y, None, cfg, group=group)
    offset, _ = qfm_step(model, x, y + torch.tensor([0, 0, 17.0, 17.0, -9.0, -9.0]), None, cfg, group=group)
    assert offset.item() == pytest.approx(base.item(), rel=1e-5)
    moved, _ = qfm_step(model, x, y + torch.tensor([10.0, 0, 0, 0, 0, 0]), None, cfg, group=group)
    assert moved.item() != pytest.approx(base.item(), rel=1e-3)
    plain, _ = qfm_step(model, x, y, None, cfg)
    ungrouped, _ = qfm_step(model, x, y, None, cfg, group=torch.full((6,), -1))
    assert plain.item() == ungrouped.item()


def test_mixture_sampler_draws_grouped_sources_in_runs_of_one_photograph():
    import numpy as np

    from training.datasets import MixtureSampler

    codes = np.repeat(np.arange(7), 5)[np.random.default_rng(0).permutation(35)]  # 7 photos x 5 versions
    plain = MixtureSampler([10, 35], [None, 14], seed=2)
    same = MixtureSampler([10, 35], [None, 14], seed=2, grouped=[None, None])
    assert list(plain) == list(same)   # no grouped source: the plan made before the option existed
    s = MixtureSampler([10, 35], [None, 14], seed=2, grouped=[None, (codes, 4)])
    for epoch in (1, 2):
        s.set_epoch(epoch)
        plan = list(s)
        assert len(plan) == len(s) == 10 + 12   # 14 rounded down to whole runs of 4
        assert sorted(i for i in plan if i < 10) == list(range(10))
        k = 0
        while k < len(plan):
            if plan[k] < 10:
                k += 1
                continue
            run = plan[k:k + 4]
            assert all(i >= 10 for i in run) and len({codes[i - 10] for i in run}) == 1 and len(set(run)) == 4
            k += 4


def test_load_sources_checks_entries(tmp_path, livec_dev):
    from training.sources import load_sources

    rows = (livec_dev / "mos.csv").read_text().splitlines()
    csv = tmp_path / "few.csv"
    csv.write_text("\n".join([rows[0]] + [f"{livec_dev}/{r}" for r in rows[1:5]]) + "\n")
    (src,) = load_sources([{"dataset": str(csv), "samples_per_epoch": 3}])
    assert (src.labels, src.group_size, src.samples_per_epoch, len(src.meta)) == ("absolute", 1, 3, 4)
    with pytest.raises(KeyError, match="lables"):
        load_sources([{"dataset": str(csv), "lables": "absolute"}])
    with pytest.raises(ValueError, match="ref_id"):   # LIVEC has no reference photographs
        load_sources([{"dataset": str(csv), "labels": "within_reference"}])
    with pytest.raises(ValueError, match="labels must be"):
        load_sources([{"dataset": str(csv), "labels": "relative"}])


@pytest.mark.slow
def test_fit_with_a_within_reference_source(tmp_path, tiny_livec):
    """fit() end to end with an absolute source plus a grouped one (here LIVEC images given made-up
    reference ids, three per "photograph"): the grouped path trains and writes its run folder."""
    from training.datasets import TrainSource
    from training.data.meta import MetaInfo, Sample

    cfg, sources, val = tiny_livec
    meta = sources[0][0]
    grouped = MetaInfo("grouped", [Sample(s.path, s.mos, f"ref{k // 3}") for k, s in enumerate(meta.samples)],
                       meta.scale, "content")
    cfg = {**cfg, "train": {**cfg["train"], "epochs": 1}}
    m = trainer.fit(cfg, tmp_path / "run", [sources[0], TrainSource(grouped, 8, "within_reference", 4)], val)
    assert m["final_epoch"] == 1 and (tmp_path / "run" / "checkpoint" / "model.safetensors").exists()
    assert m["history"][0]["train_loss"] > 0 and "srcc" in m["val"]


@pytest.mark.slow
def test_a_run_folder_made_with_another_recipe_is_not_resumed(tmp_path, tiny_livec):
    """fit() records what a run folder was made with; resuming or skipping it with a changed
    config or a data set of other size is an error, extending train.epochs is a resume."""
    import copy

    cfg, sources, val = tiny_livec
    cfg = copy.deepcopy(cfg)
    cfg["train"]["epochs"] = 1
    trainer.fit(cfg, tmp_path / "run", sources, val)
    other = copy.deepcopy(cfg)
    other["loss"]["w_plcc"] = 0.0
    with pytest.raises(ValueError, match="different config"):
        trainer.fit(other, tmp_path / "run", sources, val)
    fewer = [(sources[0][0].subset(range(8)), None)]
    with pytest.raises(ValueError, match="different train_sources"):
        trainer.fit(cfg, tmp_path / "run", fewer, val)
    longer = copy.deepcopy(cfg)
    longer["train"]["epochs"] = 2
    m = trainer.fit(longer, tmp_path / "run", sources, val)
    assert [h["epoch"] for h in m["history"]] == [1, 2]   # resumed after epoch 1, not restarted
    trainer.fit(other, tmp_path / "run", sources, val, resume=False)   # a fresh start is allowed


def test_every_committed_config_is_valid():
    """Every YAML under training/configs merges over the defaults (unknown keys are errors) and
    its data.train entries use known keys and label kinds; distillation specs per section."""
    from pathlib import Path

    import yaml

    from training.config import DEFAULTS, _merge, load_config
    from training.datasets import LABEL_KINDS
    from training.sources import SOURCE_KEYS

    paths = sorted((Path(__file__).resolve().parents[1] / "training" / "configs").rglob("*.yaml"))
    assert len(paths) >= 10
    for p in paths:
        raw = yaml.safe_load(p.read_text())
        sections = [_merge(DEFAULTS, raw[k]) for k in ("teacher", "student")] if "teacher" in raw else [load_config(p)]
        for cfg in sections:
            for e in cfg["data"]["train"]:
                assert set(e) <= SOURCE_KEYS and e.get("labels", "absolute") in LABEL_KINDS, (p.name, e)


@pytest.mark.parametrize("bank_items, matched, stored", [("all", 1.0, 6), ("absolute", 2 / 6, 2)])
def test_bank_items_keeps_within_reference_items_out_of_the_memory(bank_items, matched, stored):
    """qfm.bank_items 'absolute': items of within-reference sources are neither stored in the
    memory bank nor matched against it (their labels are on another scale); 'all' as before."""
    from training.qfm.memory import MemoryBank

    model, x, y, group, cfg = _mixed_label_batch()
    cfg["qfm"].update(bank_items=bank_items, min_memory=1, tau=1e9)   # any bank entry is a candidate
    mem = MemoryBank(16, 384)
    _, logs = qfm_step(model, x, y, mem, cfg, group=group)
    assert mem.size == stored and "pert" not in logs
    _, logs = qfm_step(model, x, y, mem, cfg, group=group)
    assert logs["matched"] == pytest.approx(matched) and mem.size == 2 * stored


def test_identity_ignores_options_added_since_at_their_defaults(tmp_path):
    """A run folder made before an option existed is the same recipe while the option sits at its
    default (which keeps the old behaviour), and another recipe once it does not."""
    import copy

    from training.config import DEFAULTS

    cfg = json.loads(json.dumps(DEFAULTS))
    identity = {"config": cfg, "train_sources": [{"name": "livec", "n": 10}], "val": None}
    old = copy.deepcopy(identity)
    del old["config"]["qfm"]["bank_items"]          # written by code that did not know the option
    (tmp_path / "identity.json").write_text(json.dumps(old))
    run_folder.check_identity(tmp_path, identity)       # same recipe: no error
    changed = copy.deepcopy(identity)
    changed["config"]["qfm"]["bank_items"] = "absolute"
    with pytest.raises(ValueError, match="different config"):
        run_folder.check_identity(tmp_path, changed)
    other = copy.deepcopy(identity)
    other["config"]["qfm"]["tau"] = 5.0             # an option the folder knew: compared as ever
    with pytest.raises(ValueError, match="different config"):
        run_folder.check_identity(tmp_path, other)


def test_config_rejects_an_unknown_bank_items_value(tmp_path):
    from training.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("qfm: {bank_items: grouped}\n")
    with pytest.raises(ValueError, match="bank_items"):
        load_config(path)
