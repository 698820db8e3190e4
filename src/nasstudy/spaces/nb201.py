"""The `nb201` space: the NAS-Bench-201 cell (4 nodes, 6 edges, 5 ops; docs/design.md#spaces).

An arch is one categorical decision per edge, the index of its op in that edge's active list, so
the same search methods run here as in the mobile space, and the canonical string is the
benchmark's own (`|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`): a table lookup needs nothing else.
A space state may narrow each edge to a subset of the ops (a subspace); the network around the
cell (stem, 3 stages of N cells at C/2C/4C channels, residual reduction blocks, BN, pool, linear)
is fixed, and scaled by `C`, `N`, `image_size`, `num_classes` in the space config.

Analytic costs follow the benchmark's network (nb201_net.py): params include BN affine weights;
FLOPs are the MACs of every conv plus the linear classifier including its bias (pooling, BN, ReLU
and additions are not counted). Every conv edge counts, even one whose output reaches nothing.
This module imports no torch: the cell's definition is in `nb201_cell`, the networks are built by
`nb201_net`, imported on first `build`.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from nasstudy.spaces.nb201_cell import (
    EDGES,
    KERNEL,
    OPS,
    Ops,
    check_op,
    net_config,
    ops_per_edge,
    stage_shapes,
)

if TYPE_CHECKING:  # the networks live in nb201_net (torch); a table search never imports torch
    from nasstudy.spaces.nb201_net import StandaloneNet

Arch = tuple[int, ...]


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


def op_cost(name: str, channels: int, size: int) -> tuple[int, int]:
    """(MACs, params) of one edge op in one cell; only the convs cost anything."""
    k = KERNEL.get(check_op(name))
    if k is None:
        return 0, 0
    return size * size * channels * channels * k * k, channels * channels * k * k + 2 * channels


def fixed_cost(channels: int, image_size: int, num_classes: int) -> tuple[int, int]:
    """(MACs, params) of everything outside the cells: stem, reduction blocks, last BN, classifier."""
    c, s = channels, image_size
    macs, params = s * s * c * 27, 27 * c + 2 * c  # stem 3x3 conv 3->C + BN
    (c1, s1), (c2, s2), (c3, s3) = stage_shapes(channels, image_size)
    for c_in, c_out, out in ((c1, c2, s2), (c2, c3, s3)):
        macs += out * out * (9 * c_in * c_out + 9 * c_out * c_out + c_in * c_out)
        params += 9 * c_in * c_out + 2 * c_out + 9 * c_out * c_out + 2 * c_out + c_in * c_out
    params += 2 * c3  # last BN
    macs += c3 * num_classes + num_classes  # classifier, bias counted as the benchmark does
    params += c3 * num_classes + num_classes
    return macs, params


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
        for e, (names, active) in enumerate(zip(ops_per_edge(ops), self.active)):
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
        from nasstudy.spaces.nb201_net import build_net

        return build_net(self.cfg, self.ops(arch), self.num_classes if num_classes is None else num_classes)

    def size(self) -> int:
        """Number of archs (product of the decision sizes)."""
        return math.prod(self.decision_sizes)
