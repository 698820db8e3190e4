"""The `nb201` space: the NAS-Bench-201 cell (4 nodes, 6 edges, 5 ops; DESIGN.md §3).

An arch is one categorical decision per edge, the index of its op in that edge's active list, so
the same search methods run here as in the mobile space, and the canonical string is the
benchmark's own (`|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`): a table lookup needs nothing else.
A space state may narrow each edge to a subset of the ops (a subspace); the network around the
cell (stem, 3 stages of N cells at C/2C/4C channels, residual reduction blocks, BN, pool, linear)
is fixed, and scaled by `C`, `N`, `image_size`, `num_classes` in the space config.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from collections.abc import Sequence

import numpy as np
from torch import Tensor, nn

from nasstudy.spaces.nb201_ops import (
    EDGES,
    OPS,
    Cell,
    ResBlock,
    check_op,
    fixed_cost,
    op_cost,
    stage_shapes,
)
from nasstudy.spaces.shared_weights import SharedWeights, count_params

Arch = tuple[int, ...]
Ops = Sequence[Sequence[str] | str]

__all__ = [
    "EDGES",
    "OPS",
    "Arch",
    "Nb201Space",
    "StandaloneNet",
    "Supernet",
    "arch_string",
    "build_net",
    "count_params",
    "initial_state",
    "net_config",
    "parse_arch_string",
]


def net_config(space_cfg: dict) -> tuple[int, int, int, int]:
    """(C, N, image_size, num_classes) with the benchmark's defaults (16, 5, 32, 10), checked."""
    c, n = int(space_cfg.get("C", 16)), int(space_cfg.get("N", 5))
    size, classes = int(space_cfg.get("image_size", 32)), int(space_cfg.get("num_classes", 10))
    if c < 1 or n < 1 or classes < 1:
        raise ValueError(f"nb201 needs C, N, num_classes >= 1, got C={c} N={n} num_classes={classes}")
    if size < 4 or size % 4:
        # Two stride-2 reductions: the conv path and the avg-pool shortcut agree only on even sizes.
        raise ValueError(f"nb201 needs image_size divisible by 4, got {size}")
    return c, n, size, classes


def initial_state(space_cfg: dict) -> dict:
    """Every edge starts with `initial_ops` active (default: all 5 ops), the other ops queued."""
    active = list(space_cfg.get("initial_ops") or OPS)  # null (the params default) = every op
    _check_active(active, "initial_ops")
    return {"edges": [{"active": list(active), "queue": [op for op in OPS if op not in active]} for _ in EDGES]}


def _check_active(active: Sequence[str], where: str) -> None:
    for op in active:
        check_op(op)
    if not active or len(set(active)) != len(active):
        raise ValueError(f"{where}: needs at least one op and no repeats, got {list(active)}")


def arch_string(ops: Sequence[str]) -> str:
    """The NB201 string of six op names given in edge order (0->1, 0->2, 1->2, 0->3, 1->3, 2->3)."""
    if len(ops) != len(EDGES):
        raise ValueError(f"an NB201 cell has {len(EDGES)} edges, got {len(ops)} ops")
    nodes = []
    for i in range(1, 4):
        nodes.append("|" + "|".join(f"{check_op(op)}~{j}" for op, (j, dst) in zip(ops, EDGES) if dst == i) + "|")
    return "+".join(nodes)


def parse_arch_string(s: str) -> list[str]:
    """The six op names of an NB201 string, in edge order; ValueError naming what is wrong."""
    nodes = s.strip().split("+")
    if len(nodes) != 3:
        raise ValueError(f"malformed NB201 arch string {s!r}: expected 3 '+'-separated nodes, got {len(nodes)}")
    ops = []
    for i, node in enumerate(nodes, start=1):
        if len(node) < 2 or node[0] != "|" or node[-1] != "|":
            raise ValueError(f"malformed NB201 arch string {s!r}: node {node!r} must be wrapped in '|'")
        entries = node[1:-1].split("|")
        if len(entries) != i:
            raise ValueError(f"malformed NB201 arch string {s!r}: node {i} needs {i} inputs, got {node!r}")
        for j, entry in enumerate(entries):
            op, sep, src = entry.partition("~")
            if not sep or src != str(j):
                raise ValueError(f"malformed NB201 arch string {s!r}: expected 'op~{j}' in node {i}, got {entry!r}")
            if op not in OPS:
                raise ValueError(f"unknown NB201 op {op!r} in arch string {s!r}: known ops are {list(OPS)}")
            ops.append(op)
    # Nodes list their inputs in source order, which is the edge order of EDGES.
    return ops


def _edge_ops(ops: Ops) -> list[list[str]]:
    """Op names per edge as lists (a bare string counts as one op), checked against the known ops."""
    if len(ops) != len(EDGES):
        raise ValueError(f"got ops for {len(ops)} edges, an NB201 cell has {len(EDGES)}")
    out = [[o] if isinstance(o, str) else list(o) for o in ops]
    for names in out:
        for op in names:
            check_op(op)
    return out


class Nb201Net(nn.Module):
    """Stem, 3 stages of N cells with reduction blocks between, last BN-ReLU, pool, classifier.

    Every cell holds the same ops per edge: the standalone net of one arch, or with all active
    ops the supernet (same module names, so a subnet takes the supernet's weights by name).
    """

    def __init__(self, space_cfg: dict, ops: Ops, num_classes: int) -> None:
        super().__init__()
        c, n, size, _ = net_config(space_cfg)
        edge_ops = _edge_ops(ops)
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        cells: list[nn.Module] = []
        self.stage_ends: list[int] = []
        shapes = stage_shapes(c, size)
        for s, (ch, _) in enumerate(shapes):
            if s > 0:
                cells.append(ResBlock(shapes[s - 1][0], ch))
            cells.extend(Cell(ch, edge_ops) for _ in range(n))
            self.stage_ends.append(len(cells) - 1)
        self.cells = nn.ModuleList(cells)
        self.feature_channels = [ch for ch, _ in shapes]
        self.lastact = nn.Sequential(nn.BatchNorm2d(shapes[-1][0]), nn.ReLU())
        self.classifier = nn.Linear(shapes[-1][0], int(num_classes))

    def _run(self, x: Tensor, ops: list[list[str]] | None, gates: Sequence[Tensor] | None) -> list[Tensor]:
        """Outputs of every stage."""
        feats = []
        x = self.stem(x)
        for i, cell in enumerate(self.cells):
            x = cell(x, ops, gates) if isinstance(cell, Cell) else cell(x)
            if i in self.stage_ends:
                feats.append(x)
        return feats

    def _classify(self, x: Tensor) -> Tensor:
        return self.classifier(self.lastact(x).mean(dim=(2, 3)))


class StandaloneNet(Nb201Net):
    """One arch as a plain network (retrain, transfer backbone)."""

    def forward(self, x: Tensor) -> Tensor:
        return self._classify(self._run(x, None, None)[-1])

    def features(self, x: Tensor) -> list[Tensor]:
        """Output of each stage's last cell (strides 1, 2, 4), for detection/segmentation heads."""
        return self._run(x, None, None)


def build_net(space_cfg: dict, ops: Ops, num_classes: int) -> StandaloneNet:
    """The net of `ops` (one op name per edge; several on an edge are summed, none gives zeros)."""
    return StandaloneNet(space_cfg, ops, num_classes)


class Supernet(SharedWeights, Nb201Net):
    """Weights for every active op on every edge of every cell; runs any arch by its op names."""

    build_net = staticmethod(build_net)

    def __init__(self, space_cfg: dict, active: Ops, num_classes: int | None = None) -> None:
        n = int(space_cfg.get("num_classes", 10)) if num_classes is None else int(num_classes)
        super().__init__(space_cfg, active, n)
        self.space_cfg = json.loads(json.dumps(space_cfg))
        self.active = _edge_ops(active)
        self.num_classes = n

    def forward(self, x: Tensor, ops: Ops, gates: Sequence[Tensor] | None = None) -> Tensor:
        """Logits of the arch `ops` (op names per edge); `gates[e][k]` scales op k of edge e in every cell."""
        edge_ops = _edge_ops(ops)
        for e, (names, active) in enumerate(zip(edge_ops, self.active)):
            missing = [op for op in names if op not in active]
            if missing:
                raise ValueError(f"edge {e}: ops {missing} are not in the supernet's active {active}")
        if gates is not None and len(gates) != len(EDGES):
            raise ValueError(f"got gates for {len(gates)} edges, an NB201 cell has {len(EDGES)}")
        return self._classify(self._run(x, edge_ops, gates)[-1])


class Nb201Space:
    """Decisions, sampling, mutation, strings and analytic costs of the NB201 space (or a subspace).

    `state` is `{"edges": [{"active": [op, ...], "queue": [op, ...]}] * 6}` (the mobile space's
    `positions` key is accepted too); None means `initial_state(space_cfg)`.
    """

    def __init__(self, space_cfg: dict, state: dict | None = None) -> None:
        self.cfg = copy.deepcopy(space_cfg)
        c, n, size, self.num_classes = net_config(space_cfg)
        state = initial_state(space_cfg) if state is None else state
        entries = state["edges"] if "edges" in state else state.get("positions")
        if entries is None or len(entries) != len(EDGES):
            got = "none" if entries is None else len(entries)
            raise ValueError(f"an nb201 state needs 'edges' with {len(EDGES)} entries, got {got}")
        self.active: list[list[str]] = [list(p["active"]) for p in entries]
        for e, active in enumerate(self.active):
            _check_active(active, f"edge {e}")
        self.num_positions = len(EDGES)
        self.decision_sizes: list[int] = [len(a) for a in self.active]
        # Per op: (MACs, params) of that op on one edge over all N cells of all three stages.
        self._op_cost = {
            op: tuple(n * sum(op_cost(op, ch, sz)[w] for ch, sz in stage_shapes(c, size)) for w in (0, 1)) for op in OPS
        }
        self._fixed = fixed_cost(c, size, self.num_classes)

    def _check(self, arch: Sequence[int]) -> Arch:
        arch = tuple(int(a) for a in arch)
        if len(arch) != len(self.decision_sizes) or any(not 0 <= a < k for a, k in zip(arch, self.decision_sizes)):
            raise ValueError(f"{arch} is not an arch of this space (choices per edge: {self.decision_sizes})")
        return arch

    def sample(self, rng: np.random.Generator) -> Arch:
        """An op drawn uniformly per edge (uniform over all archs of the space)."""
        return tuple(int(rng.integers(k)) for k in self.decision_sizes)

    def mutate(self, arch: Arch, rng: np.random.Generator) -> Arch:
        """Another op on one edge (among edges with a choice): always a different arch."""
        out = list(self._check(arch))
        free = [e for e, k in enumerate(self.decision_sizes) if k > 1]
        if not free:
            raise ValueError("this space holds a single arch: nothing to mutate")
        e = free[int(rng.integers(len(free)))]
        new = int(rng.integers(self.decision_sizes[e] - 1))
        out[e] = new + 1 if new >= out[e] else new
        return tuple(out)

    def encode(self, arch: Arch) -> np.ndarray:
        """One-hot per edge, concatenated (float32, length sum(decision_sizes))."""
        arch = self._check(arch)
        vec = np.zeros(sum(self.decision_sizes), dtype=np.float32)
        vec[np.cumsum([0, *self.decision_sizes[:-1]]) + np.asarray(arch)] = 1.0
        return vec

    def decode(self, vec: Sequence[float] | np.ndarray) -> Arch:
        """Argmax per edge block (the first on ties): inverse of `encode`, and any real vector decodes."""
        v = np.asarray(vec, dtype=np.float64)
        if v.shape != (sum(self.decision_sizes),):
            raise ValueError(f"expected a vector of length {sum(self.decision_sizes)}, got shape {v.shape}")
        out, i = [], 0
        for k in self.decision_sizes:
            out.append(int(np.argmax(v[i : i + k])))
            i += k
        return tuple(out)

    def ops(self, arch: Arch) -> list[tuple[str, ...]]:
        """The chosen op per edge as a one-op tuple (the mobile space's shape: op names per position)."""
        return [(active[a],) for active, a in zip(self.active, self._check(arch))]

    def from_ops(self, ops: Ops) -> Arch:
        """Inverse of `ops` (a bare op name per edge works too); an op not active on its edge is an error."""
        arch = []
        for e, (names, active) in enumerate(zip(_edge_ops(ops), self.active)):
            if len(names) != 1:
                raise ValueError(f"edge {e}: an nb201 arch has exactly one op per edge, got {names}")
            if names[0] not in active:
                j, i = EDGES[e]
                raise ValueError(f"op {names[0]!r} on edge {j}->{i} is not active in this space: {active}")
            arch.append(active.index(names[0]))
        return tuple(arch)

    def to_string(self, arch: Arch) -> str:
        """The NB201 string, e.g. `|nor_conv_3x3~0|+|none~0|skip_connect~1|+|...~0|...~1|...~2|`."""
        return arch_string([o[0] for o in self.ops(arch)])

    def from_string(self, s: str) -> Arch:
        """Inverse of `to_string`; ValueError on a malformed string, an unknown or inactive op."""
        return self.from_ops(parse_arch_string(s))

    def enumerate(self) -> list[Arch]:
        """Every arch of the (sub)space, in lexicographic order of the decisions."""
        return [tuple(a) for a in itertools.product(*(range(k) for k in self.decision_sizes))]

    def flops(self, arch: Arch) -> int:
        """MACs per image as NB201 counts them: convs plus the classifier incl. bias."""
        return self._cost(arch, 0)

    def params(self, arch: Arch) -> int:
        """Parameters of `build` for this arch (convs, BN affine, classifier)."""
        return self._cost(arch, 1)

    def _cost(self, arch: Arch, which: int) -> int:
        return int(self._fixed[which] + sum(self._op_cost[o[0]][which] for o in self.ops(arch)))

    def build(self, arch: Arch, num_classes: int | None = None) -> StandaloneNet:
        """The standalone net of `arch`."""
        return build_net(self.cfg, self.ops(arch), self.num_classes if num_classes is None else num_classes)

    def size(self) -> int:
        """Number of archs (product of the decision sizes)."""
        return math.prod(self.decision_sizes)
