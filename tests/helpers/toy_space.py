"""A tiny search space with the generic API methods see: 6 decisions x 3 options, a smooth score.

The score is highest (100) at `OPTIMUM` and falls with the squared distance of every decision to
it, so local moves (mutations) pay off: evolution should beat random sampling here.
"""

from __future__ import annotations

import numpy as np

OPTIMUM = (2, 0, 1, 2, 2, 0)


class ToySpace:
    def __init__(self, sizes: tuple[int, ...] = (3,) * 6) -> None:
        self.decision_sizes = list(sizes)

    def sample(self, rng: np.random.Generator) -> tuple[int, ...]:
        return tuple(int(rng.integers(s)) for s in self.decision_sizes)

    def mutate(self, arch: tuple[int, ...], rng: np.random.Generator) -> tuple[int, ...]:
        """Change one decision to another of its options."""
        i = int(rng.integers(len(arch)))
        new = list(arch)
        new[i] = (arch[i] + 1 + int(rng.integers(self.decision_sizes[i] - 1))) % self.decision_sizes[i]
        return tuple(new)

    def encode(self, arch: tuple[int, ...]) -> np.ndarray:
        vec = np.zeros(sum(self.decision_sizes), dtype=np.float32)
        vec[np.cumsum([0, *self.decision_sizes[:-1]]) + np.asarray(arch)] = 1.0
        return vec

    def decode(self, vec: np.ndarray) -> tuple[int, ...]:
        parts = np.split(np.asarray(vec), np.cumsum(self.decision_sizes)[:-1])
        return tuple(int(np.argmax(p)) for p in parts)

    def to_string(self, arch: tuple[int, ...]) -> str:
        return "-".join(map(str, arch))

    def from_string(self, s: str) -> tuple[int, ...]:
        return tuple(int(x) for x in s.split("-"))

    def flops(self, arch: tuple[int, ...]) -> int:
        return 1000 + 100 * sum(arch)

    def params(self, arch: tuple[int, ...]) -> int:
        return 10 + sum(arch)


def score(arch: tuple[int, ...]) -> dict:
    """Synthetic metrics: acc in percent, unique maximum at OPTIMUM."""
    acc = 100.0 - 3.0 * sum((a - o) ** 2 for a, o in zip(arch, OPTIMUM))
    return {
        "acc": acc,
        "loss": (100.0 - acc) / 50.0,
        "flops": 1000 + 100 * sum(arch),
        "params": 10 + sum(arch),
    }
