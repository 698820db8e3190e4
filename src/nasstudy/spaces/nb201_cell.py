"""The NB201 cell without torch: its ops, edges and the shape of the net around it.

Shared by the space (`nb201.py`: decisions, strings, analytic costs) and its networks
(`nb201_net.py`), so that the networks need nothing from the space and the space imports the
networks (and torch) only when it builds one.
"""

from __future__ import annotations

from collections.abc import Sequence

Ops = Sequence[Sequence[str] | str]

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NUM_NODES = 4
# (source node, target node) of the six edges, in the order the arch string lists them.
EDGES: tuple[tuple[int, int], ...] = tuple((j, i) for i in range(1, NUM_NODES) for j in range(i))
KERNEL = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}


def check_op(name: str) -> str:
    """The name itself, or a ValueError naming it when it is not an NB201 op."""
    if name not in OPS:
        raise ValueError(f"unknown NB201 op {name!r}: known ops are {list(OPS)}")
    return name


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


def stage_shapes(channels: int, image_size: int) -> list[tuple[int, int]]:
    """(channels, feature size) of the three stages: C, 2C, 4C at sizes s, s/2, s/4."""
    return [(channels * 2**i, image_size // 2**i) for i in range(3)]


def ops_per_edge(ops: Ops) -> list[list[str]]:
    """Op names per edge as lists (a bare string counts as one op), checked against the known ops."""
    if len(ops) != len(EDGES):
        raise ValueError(f"got ops for {len(ops)} edges, an NB201 cell has {len(EDGES)}")
    out = [[o] if isinstance(o, str) else list(o) for o in ops]
    for names in out:
        for op in names:
            check_op(op)
    return out
