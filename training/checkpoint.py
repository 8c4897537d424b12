"""Checkpoints as safetensors + JSON (never pickle), written atomically.

A model directory holds `model.safetensors` and `config.json` (the StudentConfig, so a
checkpoint rebuilds its own architecture, and the crop plan its scores are defined by, so
evaluation, banks and serving crop its inputs the same way). Training state for resume lives in
a separate folder: `optimizer.safetensors` + `trainer.json`.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from qfm_core.crop_plan import DEFAULT_GRID, CropPlan, read_plan
from qfm_core.files import atomic_path, write_json
from training.models.registry import StudentConfig
from training.models.student import QFMStudent

FORMAT = "qfm-iqm-student/1"
# The student this repository ships (make bundle rebuilds it); every default checkpoint points here.
BUNDLED = Path(__file__).resolve().parents[1] / "models/qfm_iqm"


def _atomic_json(obj, path: Path) -> None:
    write_json(path, obj)


def _atomic_safetensors(tensors: dict, path: Path, metadata: dict | None = None) -> None:
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def student_plan(cfg: StudentConfig, grid: int = DEFAULT_GRID) -> CropPlan:
    """The crop plan of a student evaluated on grid x grid crops of its input size."""
    return CropPlan(size=cfg.input_size, grid=grid, mean=cfg.mean, std=cfg.std)


def load_plan(ckpt_dir: str | Path) -> CropPlan:
    return read_plan(Path(ckpt_dir) / "config.json")


def save_student(model: QFMStudent, out_dir: str | Path, dtype: torch.dtype = torch.float32, extra: dict | None = None,
                 grid: int = DEFAULT_GRID) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
             for k, v in model.state_dict().items()}
    _atomic_safetensors(state, out / "model.safetensors", {"format": FORMAT})
    cfg = model.cfg.to_dict()
    _atomic_json({"format": FORMAT, "student": cfg, "crop_plan": student_plan(model.cfg, grid).to_dict(),
                  "weights_dtype": str(dtype).replace("torch.", ""), **(extra or {})}, out / "config.json")


def load_student(ckpt_dir: str | Path, device: str = "cpu") -> QFMStudent:
    """Rebuild the student from config.json and load its weights strictly (as float32)."""
    ckpt = Path(ckpt_dir)
    cfg_path, w_path = ckpt / "config.json", ckpt / "model.safetensors"
    if not cfg_path.exists() or not w_path.exists():
        raise FileNotFoundError(f"{ckpt} is not a student checkpoint (needs config.json and model.safetensors)")
    meta = json.loads(cfg_path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{cfg_path}: unsupported format {meta.get('format')!r} (expected {FORMAT})")
    cfg = StudentConfig.from_dict({**meta["student"], "pretrained": "none"})
    model = QFMStudent(cfg)
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(w_path)).items()}
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def load_student_and_dataset(ckpt_dir, dataset: str, root=None, split=None):
    """(model, MetaInfo) for the commands that run a checkpoint over a data set; raises
    FileNotFoundError / KeyError / ValueError with messages meant for the user."""
    from training.data.registry import load_dataset

    return load_student(ckpt_dir), load_dataset(dataset, root, split)


def save_training_state(optimizer: torch.optim.Optimizer, trainer_state: dict, state_dir: str | Path,
                        memory: dict | None = None) -> None:
    """Optimizer tensors to safetensors (flattened keys), scalars and trainer progress to JSON,
    the QFM memory bank beside them. trainer.json goes last: it is what marks an epoch done."""
    d = Path(state_dir)
    d.mkdir(parents=True, exist_ok=True)
    if memory is not None:
        _atomic_safetensors(memory, d / "memory.safetensors")
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, pstate in sd["state"].items():
        for key, val in pstate.items():
            if torch.is_tensor(val):
                tensors[f"{pid}.{key}"] = val.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = val
    _atomic_safetensors(tensors, d / "optimizer.safetensors")
    _atomic_json({"param_groups": sd["param_groups"], "scalars": scalars, "trainer": trainer_state}, d / "trainer.json")


def load_training_state(optimizer: torch.optim.Optimizer, state_dir: str | Path) -> dict:
    d = Path(state_dir)
    meta = json.loads((d / "trainer.json").read_text())
    state: dict = {}
    for key, val in load_file(str(d / "optimizer.safetensors")).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = val
    for key, val in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = val
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return meta["trainer"]
