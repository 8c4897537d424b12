"""FIFO memory of (semantic feature, normalised quality) pairs from recent batches and from
teacher-labelled data: the pool semantic-noise matching draws perturbations from."""
from __future__ import annotations

import torch


class MemoryBank:
    def __init__(self, capacity: int, dim: int):
        if capacity <= 0:
            raise ValueError("memory capacity must be positive")
        self.features = torch.zeros(capacity, dim)
        self.scores = torch.zeros(capacity)
        self.capacity, self.size, self._head = capacity, 0, 0

    @torch.no_grad()
    def push(self, features: torch.Tensor, scores: torch.Tensor) -> None:
        """Append a batch, overwriting the oldest entries once full."""
        features, scores = features.detach().float().cpu(), scores.detach().float().cpu().reshape(-1)
        for start in range(0, len(features), self.capacity):
            f, s = features[start:start + self.capacity], scores[start:start + self.capacity]
            idx = (self._head + torch.arange(len(f))) % self.capacity
            self.features[idx], self.scores[idx] = f, s
            self._head = int((self._head + len(f)) % self.capacity)
            self.size = min(self.capacity, self.size + len(f))

    def contents(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features[: self.size], self.scores[: self.size]

    def state_dict(self) -> dict:
        """Exact ring state (slot order decides matching ties), for bit-identical resume."""
        return {"features": self.features.clone(), "scores": self.scores.clone(),
                "position": torch.tensor([self._head, self.size])}

    def load_state_dict(self, state: dict) -> None:
        if state["features"].shape != self.features.shape:
            raise ValueError(f"memory shape {tuple(state['features'].shape)} != {tuple(self.features.shape)}")
        self.features.copy_(state["features"])
        self.scores.copy_(state["scores"])
        self._head, self.size = (int(v) for v in state["position"])
