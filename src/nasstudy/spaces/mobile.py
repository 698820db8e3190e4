"""The `mobile` space: an NSE/ProxylessNAS-style chain of positions, each picking a subset of its
active candidates: MBConv ops or graph cells (`mobile_cells`) (docs/design.md#spaces,
docs/architecture.md).

An arch is one binary decision per (position, active op), flattened in position order, so every
search method sees a plain list of categorical decisions.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence

import numpy as np
from torch import Tensor, nn

from nasstudy.spaces.mobile_blocks import (
    Position,
    check_op,
    fixed_cost,
    global_pool,
    out_size,
    position_cost,
    stem_and_head,
)
from nasstudy.spaces.shared_weights import SharedWeights, count_params  # noqa: F401 - part of this module's API

Arch = tuple[int, ...]
Ops = Sequence[Sequence[str]]


def position_shapes(space_cfg: dict) -> list[tuple[int, int, int, int]]:
    """(c_in, c_out, stride, in_size) of every position, in order."""
    c_in = int(space_cfg["stem_channels"])
    size = out_size(int(space_cfg.get("image_size", 32)), int(space_cfg.get("stem_stride", 1)))
    shapes = []
    for stage in space_cfg["stages"]:
        for j in range(int(stage["positions"])):
            stride = int(stage["stride"]) if j == 0 else 1
            shapes.append((c_in, int(stage["channels"]), stride, size))
            c_in, size = int(stage["channels"]), out_size(size, stride)
    return shapes


def initial_state(space_cfg: dict) -> dict:
    """First k pool ops active at every position, the rest queued (a space_state dict)."""
    pool, k = list(space_cfg["pool"]), int(space_cfg["k"])
    for op in pool:
        check_op(op)
    if not 1 <= k <= len(pool):
        raise ValueError(f"k={k} must be between 1 and the pool size {len(pool)}")
    n = len(position_shapes(space_cfg))
    return {"positions": [{"active": pool[:k], "queue": pool[k:]} for _ in range(n)]}


class MobileNet(nn.Module):
    """Stem, positions, head: the standalone net of one arch and, with all active ops, the supernet."""

    def __init__(self, space_cfg: dict, ops: Ops, num_classes: int, always_proj: bool) -> None:
        super().__init__()
        shapes = position_shapes(space_cfg)
        if len(ops) != len(shapes):
            raise ValueError(f"got ops for {len(ops)} positions, the space has {len(shapes)}")
        self.stem_stride = int(space_cfg.get("stem_stride", 1))
        c_last = shapes[-1][1]
        self.stem, self.head, self.classifier = stem_and_head(
            int(space_cfg["stem_channels"]), self.stem_stride, c_last, int(space_cfg["head_channels"]), num_classes
        )
        self.positions = nn.ModuleList(
            Position(c_in, c_out, stride, list(o), proj=always_proj or not o)
            for (c_in, c_out, stride, _), o in zip(shapes, ops)
        )
        ends = np.cumsum([int(s["positions"]) for s in space_cfg["stages"]]) - 1
        self.stage_ends = [int(e) for e in ends]
        self.feature_channels = [int(s["channels"]) for s in space_cfg["stages"]]

    def _classify(self, x: Tensor) -> Tensor:
        return self.classifier(global_pool(self.head(x)))


class StandaloneNet(MobileNet):
    """One arch of the space as a plain network (retrain, transfer backbone)."""

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for pos in self.positions:
            x = pos(x)
        return self._classify(x)

    def features(self, x: Tensor) -> list[Tensor]:
        """Outputs of every stage (strides rising), for detection/segmentation heads."""
        feats = []
        x = self.stem(x)
        for i, pos in enumerate(self.positions):
            x = pos(x)
            if i in self.stage_ends:
                feats.append(x)
        return feats


def build_net(space_cfg: dict, ops: Ops, num_classes: int) -> StandaloneNet:
    """A standalone net holding only the chosen ops (a projection only where a subset is empty)."""
    return StandaloneNet(space_cfg, ops, num_classes, always_proj=False)


class Supernet(SharedWeights, MobileNet):
    """Weights for every active op at every position; runs any arch of the space by its op names."""

    build_net = staticmethod(build_net)

    def __init__(self, space_cfg: dict, active: Ops, num_classes: int | None = None) -> None:
        n = int(space_cfg["num_classes"]) if num_classes is None else int(num_classes)
        super().__init__(space_cfg, active, n, always_proj=True)
        self.space_cfg = json.loads(json.dumps(space_cfg))
        self.active = [list(a) for a in active]
        self.num_classes = n

    def forward(self, x: Tensor, ops: Ops, gates: Sequence[Tensor] | None = None) -> Tensor:
        """Logits of the arch `ops`; `gates[i][j]` scales branch j of position i (NSE straight-through)."""
        if len(ops) != len(self.positions):
            raise ValueError(f"got ops for {len(ops)} positions, the supernet has {len(self.positions)}")
        x = self.stem(x)
        for i, pos in enumerate(self.positions):
            x = pos(x, ops[i], None if gates is None else gates[i])
        return self._classify(x)


class MobileSpace:
    """Decisions, sampling, mutation, strings and analytic costs of the mobile space for one state."""

    def __init__(self, space_cfg: dict, state: dict) -> None:
        self.cfg = copy.deepcopy(space_cfg)
        self.shapes = position_shapes(space_cfg)
        self.active: list[list[str]] = [list(p["active"]) for p in state["positions"]]
        if len(self.active) != len(self.shapes):
            raise ValueError(f"state has {len(self.active)} positions, the space config {len(self.shapes)}")
        self.num_positions = len(self.shapes)
        self.num_classes = int(space_cfg.get("num_classes", 10))
        self.decision_sizes: list[int] = [2] * sum(len(a) for a in self.active)
        # Cost tables: per position, per active op; plus the empty-subset cost and the fixed parts.
        self._op_cost = [
            {op: position_cost([op], *shape) for op in ops} for ops, shape in zip(self.active, self.shapes)
        ]
        self._empty_cost = [position_cost([], *shape) for shape in self.shapes]
        c_in, c_last, stride, size = self.shapes[-1]
        self._fixed = fixed_cost(
            int(space_cfg.get("image_size", 32)),
            int(space_cfg["stem_channels"]),
            int(space_cfg.get("stem_stride", 1)),
            c_last,
            int(space_cfg["head_channels"]),
            out_size(size, stride),
            self.num_classes,
        )

    def _check(self, arch: Sequence[int]) -> Arch:
        arch = tuple(int(a) for a in arch)
        if len(arch) != len(self.decision_sizes) or any(a not in (0, 1) for a in arch):
            raise ValueError(f"not an arch of this space ({len(self.decision_sizes)} binary decisions)")
        return arch

    def sample(self, rng: np.random.Generator) -> Arch:
        """Each branch on with probability 0.5 (uniform over all archs)."""
        return tuple(int(b) for b in rng.integers(0, 2, size=len(self.decision_sizes)))

    def mutate(self, arch: Arch, rng: np.random.Generator) -> Arch:
        """Flip one decision: always a different arch."""
        out = list(self._check(arch))
        i = int(rng.integers(len(out)))
        out[i] = 1 - out[i]
        return tuple(out)

    def encode(self, arch: Arch) -> np.ndarray:
        """The decisions as a float32 0/1 vector."""
        return np.asarray(self._check(arch), dtype=np.float32)

    def decode(self, vec: Sequence[float] | np.ndarray) -> Arch:
        """Floor each entry and clip to its range (RelativeNAS-style continuous vectors decode too)."""
        v = np.asarray(vec, dtype=np.float64)
        if v.shape != (len(self.decision_sizes),):
            raise ValueError(f"expected a vector of length {len(self.decision_sizes)}, got shape {v.shape}")
        hi = np.asarray(self.decision_sizes) - 1
        return tuple(int(x) for x in np.clip(np.floor(v + 1e-6), 0, hi))

    def ops(self, arch: Arch) -> list[tuple[str, ...]]:
        """Chosen op names per position, in active-list order."""
        arch = self._check(arch)
        out, i = [], 0
        for ops in self.active:
            out.append(tuple(op for op, b in zip(ops, arch[i : i + len(ops)]) if b))
            i += len(ops)
        return out

    def from_ops(self, ops: Ops) -> Arch:
        """Inverse of `ops`; an op not active at its position is an error."""
        if len(ops) != self.num_positions:
            raise ValueError(f"got ops for {len(ops)} positions, the space has {self.num_positions}")
        bits: list[int] = []
        for i, (chosen, active) in enumerate(zip(ops, self.active)):
            unknown = set(chosen) - set(active)
            if unknown:
                raise ValueError(f"position {i}: ops {sorted(unknown)} not among the active {active}")
            bits.extend(int(op in chosen) for op in active)
        return tuple(bits)

    def to_string(self, arch: Arch) -> str:
        """`mb3_e3+mb5_e3|skip|...`: positions joined by `|`, ops by `+`, `skip` for an empty subset."""
        return "|".join("+".join(o) if o else "skip" for o in self.ops(arch))

    def from_string(self, s: str) -> Arch:
        """Inverse of `to_string` (op order within a position does not matter)."""
        parts = s.strip().split("|")
        return self.from_ops([() if p == "skip" else tuple(p.split("+")) for p in parts])

    def flops(self, arch: Arch) -> int:
        """MACs per image of convs and the classifier at space_cfg['image_size'] (BN, adds not counted)."""
        return self._cost(arch, 0)

    def params(self, arch: Arch) -> int:
        """Parameters of `build_net` for this arch (conv, BN affine, classifier)."""
        return self._cost(arch, 1)

    def _cost(self, arch: Arch, which: int) -> int:
        total = self._fixed[which]
        for i, chosen in enumerate(self.ops(arch)):
            if chosen:
                total += sum(self._op_cost[i][op][which] for op in chosen)
            else:
                total += self._empty_cost[i][which]
        return int(total)

    def build(self, arch: Arch, num_classes: int | None = None) -> StandaloneNet:
        """The standalone net of `arch`."""
        return build_net(self.cfg, self.ops(arch), self.num_classes if num_classes is None else num_classes)

    def size(self) -> int:
        """Number of archs (2 ** decisions)."""
        return math.prod(self.decision_sizes)
