"""Graph cells of the `mobile` space (AutoSpace's cells): a tiny DAG of primitive ops between a 1x1
expansion and a 1x1 projection, named by a short canonical string so it can stand wherever an op
name does (space_state.json, arch strings, supernet module names).

Structure only (names, validity, mutation; no torch): `mobile_blocks` builds and costs a cell.

A cell has `n` nodes (2 <= n <= MAX_NODES). Node 0 is the expanded input, node n-1 the output; every
other node is the sum of its incoming edges, and each edge is one primitive op. Valid means: every
node after the input has an incoming edge and every node before the output an outgoing one (so
every node lies on an input-to-output path), at most one edge per node pair, edges run forwards.

Name: `g{expand}_{node 1}_{node 2}...`, each node its incoming edges `{src}{op}` joined by `-`,
e.g. `g3_0k5_0id-1k3d2` (node 1 = k5(node 0); node 2 = node 0 + k3d2(node 1)). The MBConv op
`mb5_e3_d2` is the one-edge cell `g3_0k5d2`. Edge ops: `k{K}[d{D}]` depthwise conv, `c1` 1x1 conv,
`id` identity, `avg` / `max` 3x3 pooling. Among the node labelings that keep edges forwards, the
name is the smallest one, so a cell has exactly one name.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import numpy as np

MAX_NODES = 4  # the input, at most two inner nodes, the output: AutoSpace's 4-node cells
PRIMITIVES = ("k3", "k5", "k3d2", "k5d2", "c1", "id", "avg", "max")  # what mutation draws from
EXPANDS = (1, 3, 6)  # expansion ratios mutation steps between
_EDGE_RE = re.compile(r"^(?:k(\d+)(?:d(\d+))?|c1|id|avg|max)$")

Edge = tuple[int, int, str]  # (src, dst, op)


@dataclass(frozen=True)
class Cell:
    """A graph cell: expansion ratio, node count and sorted edges (src < dst)."""

    expand: int
    nodes: int
    edges: tuple[Edge, ...]

    @property
    def name(self) -> str:
        """The canonical name (smallest over the forward-keeping labelings of the inner nodes)."""
        return min(_spell(self.expand, self.nodes, es) for es in _relabelings(self.nodes, self.edges))


def edge_op(op: str) -> tuple[str, int, int]:
    """(kind, kernel, dilation) of an edge op: kind 'dw' (kernel, dilation), 'c1', 'id', 'avg' or 'max'."""
    m = _EDGE_RE.match(op)
    if m is None:
        raise ValueError(f"unknown edge op {op!r}: expected k<kernel>[d<dilation>], c1, id, avg or max")
    if m.group(1) is None:
        return op, 1, 1
    k, d = int(m.group(1)), int(m.group(2) or 1)
    if k % 2 == 0 or (m.group(2) is not None and d < 2):
        raise ValueError(f"unknown edge op {op!r}: kernel must be odd, a written dilation >= 2")
    return "dw", k, d


def dw_op(kernel: int, dilation: int = 1) -> str:
    """The edge-op name of a depthwise conv (what an MBConv's middle layer is)."""
    return f"k{kernel}" if dilation == 1 else f"k{kernel}d{dilation}"


def make_cell(expand: int, nodes: int, edges: list[Edge] | tuple[Edge, ...]) -> Cell:
    """A checked cell; an invalid graph is an error that says what is wrong."""
    cell = Cell(int(expand), int(nodes), tuple(sorted((int(s), int(d), op) for s, d, op in edges)))
    why = _invalid(cell)
    if why:
        raise ValueError(f"invalid cell (expand {expand}, {nodes} nodes, edges {list(cell.edges)}): {why}")
    return cell


def _invalid(cell: Cell) -> str:
    if cell.expand < 1:
        return "expand must be >= 1"
    if not 2 <= cell.nodes <= MAX_NODES:
        return f"node count must be between 2 and {MAX_NODES}"
    pairs = [(s, d) for s, d, _ in cell.edges]
    if len(set(pairs)) != len(pairs):
        return "two edges join the same pair of nodes"
    if any(not 0 <= s < d < cell.nodes for s, d in pairs):
        return "edges must run forwards between existing nodes"
    for _, _, op in cell.edges:
        edge_op(op)
    return _dangling(list(range(cell.nodes)), pairs)


def _dangling(nodes: list[int], pairs: list[tuple[int, int]]) -> str:
    """Why `nodes` (in order, input first) joined by `pairs` are not all on input-to-output paths ("" if they are)."""
    if any(all(d != j for _, d in pairs) for j in nodes[1:]):
        return "a node has no incoming edge"
    if any(all(s != j for s, _ in pairs) for j in nodes[:-1]):
        return "a node has no outgoing edge"
    return ""


def _spell(expand: int, nodes: int, edges: tuple[Edge, ...]) -> str:
    parts = ["-".join(f"{s}{op}" for s, d, op in sorted(edges) if d == j) for j in range(1, nodes)]
    return "_".join([f"g{expand}", *parts])


def _relabelings(nodes: int, edges: tuple[Edge, ...]) -> list[tuple[Edge, ...]]:
    """The edge lists of every inner-node order that keeps every edge pointing forwards."""
    out = []
    for perm in itertools.permutations(range(1, nodes - 1)):
        label = {0: 0, nodes - 1: nodes - 1, **{old: new for new, old in enumerate(perm, start=1)}}
        moved = tuple(sorted((label[s], label[d], op) for s, d, op in edges))
        if all(s < d for s, d, _ in moved):
            out.append(moved)
    return out


def is_cell_name(name: str) -> bool:
    """Whether `name` is written in the cell grammar (`g...`); it may still be invalid."""
    return name.startswith("g")


def parse_cell(name: str) -> Cell:
    """The cell a canonical name stands for; a malformed, invalid or non-canonical name is an error."""
    parts = name.split("_")
    if len(parts) < 2 or not re.fullmatch(r"g[1-9]\d*", parts[0]):
        raise ValueError(f"unknown cell {name!r}: expected g<expand>_<node>[_<node>...], e.g. g3_0k5_0id-1k3d2")
    edges = []
    for dst, node in enumerate(parts[1:], start=1):
        for tok in node.split("-"):
            if len(tok) < 2 or not tok[0].isdigit():
                raise ValueError(f"unknown cell {name!r}: edge {tok!r} is not <source node><op>")
            edges.append((int(tok[0]), dst, tok[1:]))
    try:
        cell = make_cell(int(parts[0][1:]), len(parts), edges)
    except ValueError as e:
        raise ValueError(f"unknown cell {name!r}: {e}") from None
    if cell.name != name:
        raise ValueError(f"cell {name!r} is not written canonically: write {cell.name!r}")
    return cell


def _step(cur: int, grid: tuple[int, ...]) -> list[int]:
    """Grid values next to `cur` (an off-grid value moves to the grid values around it)."""
    lower, upper = [v for v in grid if v < cur], [v for v in grid if v > cur]
    return ([lower[-1]] if lower else []) + ([upper[0]] if upper else [])


def _removable(cell: Cell, gone: set[int], drop: set[tuple[int, int]]) -> bool:
    """Whether the cell stays valid without nodes `gone` and edges `drop` (pairs)."""
    keep = [(s, d) for s, d, _ in cell.edges if (s, d) not in drop and s not in gone and d not in gone]
    return not _dangling([j for j in range(cell.nodes) if j not in gone], keep)


def _moves(cell: Cell) -> dict[str, list]:
    """Every applicable one-step change, by kind (each list entry is one change's arguments)."""
    pairs = {(s, d) for s, d, _ in cell.edges}
    n = cell.nodes
    return {
        "op": [(i, op) for i, (_, _, cur) in enumerate(cell.edges) for op in PRIMITIVES if op != cur],
        "expand": _step(cell.expand, EXPANDS),
        "add_edge": [(s, d) for s in range(n) for d in range(s + 1, n) if (s, d) not in pairs],
        "remove_edge": [(s, d) for s, d in sorted(pairs) if _removable(cell, set(), {(s, d)})],
        "add_node": [(p, s, d) for p in range(1, n) for s in range(p) for d in range(p, n)] if n < MAX_NODES else [],
        "remove_node": [j for j in range(1, n - 1) if _removable(cell, {j}, set())],
    }


def mutate_cell(cell: Cell, rng: np.random.Generator) -> tuple[Cell, str]:
    """(child, kind): one local change, its kind drawn uniformly among those that apply, then the change.

    Kinds: `op` (one edge takes another primitive), `expand` (one step on 1/3/6), `add_edge` /
    `remove_edge` (one edge, the graph kept valid), `add_node` (a new inner node with one edge in
    from an earlier node and one edge out to a later one), `remove_node` (an inner node and its
    edges, where the rest stays valid). New edges draw their op from PRIMITIVES.
    """
    moves = {k: v for k, v in _moves(cell).items() if v}
    kind = sorted(moves)[int(rng.integers(len(moves)))]
    arg = moves[kind][int(rng.integers(len(moves[kind])))]
    edges, expand, n = list(cell.edges), cell.expand, cell.nodes

    def prim() -> str:
        return PRIMITIVES[int(rng.integers(len(PRIMITIVES)))]

    if kind == "op":
        s, d, _ = edges[arg[0]]
        edges[arg[0]] = (s, d, arg[1])
    elif kind == "expand":
        expand = arg
    elif kind == "add_edge":
        edges.append((*arg, prim()))
    elif kind == "remove_edge":
        edges = [e for e in edges if (e[0], e[1]) != arg]
    elif kind == "add_node":  # the new node takes label p; later nodes shift up by one
        p, s, d = arg
        edges = [(a + (a >= p), b + (b >= p), op) for a, b, op in edges] + [(s, p, prim()), (p, d + 1, prim())]
        n += 1
    else:  # remove_node
        edges = [(a - (a > arg), b - (b > arg), op) for a, b, op in edges if arg not in (a, b)]
        n -= 1
    return make_cell(expand, n, edges), kind
