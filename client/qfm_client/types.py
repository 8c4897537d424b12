from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Neighbor:
    id: int
    score: float  # the reference's known quality (0..100)
    distance: float


@dataclass
class ScoreResult:
    """One item's outcome: a score (0..100, higher = better) or an error code and message."""

    item: str  # the caller's name for the item (path, or index for bytes / PIL images)
    score: float | None = None
    neighbors: list[Neighbor] = field(default_factory=list)
    error_code: str | None = None
    error: str | None = None
    endpoint: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_code is None

    def to_dict(self) -> dict:
        d = asdict(self)
        if not self.neighbors:
            d.pop("neighbors")
        return d
