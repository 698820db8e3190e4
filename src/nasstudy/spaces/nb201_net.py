"""The NAS-Bench-201 network (Dong & Yang, ICLR 2020) in torch: its ops, cell, standalone net and
supernet.

Layers follow the benchmark's own network (ReLU-conv-BN ops, ResNet basic blocks between stages),
so that the closed-form costs in `nb201.py` reproduce the published table. Kept apart from the
space so that a table search imports no torch (it saves a second per benchmark job); it takes the
cell's definition from `nb201_cell.py`, never from the space.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from torch import Tensor, nn

from nasstudy.spaces.nb201_cell import EDGES, KERNEL, NUM_NODES, Ops, check_op, net_config, ops_per_edge, stage_shapes
from nasstudy.spaces.shared_weights import SharedWeights, count_params

__all__ = ["Cell", "ResBlock", "StandaloneNet", "Supernet", "build_net", "count_params", "make_op"]


class Zero(nn.Module):
    """The `none` op: zeros of the input's shape (kept in the graph, as the benchmark does)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mul(0.0)


def relu_conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """ReLU -> conv (no bias) -> BN: the benchmark's `ReLUConvBN`."""
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False)
    return nn.Sequential(nn.ReLU(), conv, nn.BatchNorm2d(c_out))


def make_op(name: str, channels: int) -> nn.Module:
    """One edge op at `channels` channels, stride 1 (cells never change the shape)."""
    check_op(name)
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    return relu_conv_bn(channels, channels, KERNEL[name])


class Cell(nn.Module):
    """The 4-node DAG: node i is the sum over its incoming edges of the edge's ops on node j.

    An edge holds a `ModuleDict` of op name -> module. Without `ops`, every built op of an edge
    runs and the outputs are summed (a standalone net has one op per edge); with `ops`, only the
    named ones run (the supernet). An edge with no op outputs zeros, like `none`.
    """

    def __init__(self, channels: int, ops: Sequence[Sequence[str]]) -> None:
        super().__init__()
        if len(ops) != len(EDGES):
            raise ValueError(f"a cell has {len(EDGES)} edges, got ops for {len(ops)}")
        self.edges = nn.ModuleList(nn.ModuleDict({op: make_op(op, channels) for op in names}) for names in ops)
        self.incoming = [[(e, j) for e, (j, dst) in enumerate(EDGES) if dst == i] for i in range(1, NUM_NODES)]

    def forward(
        self, x: Tensor, ops: Sequence[Sequence[str]] | None = None, gates: Sequence[Tensor] | None = None
    ) -> Tensor:
        nodes = [x]
        for edges in self.incoming:
            total: Tensor | None = None
            for e, j in edges:
                y = self._edge(e, nodes[j], None if ops is None else ops[e], None if gates is None else gates[e])
                total = y if total is None else total + y
            assert total is not None
            nodes.append(total)
        return nodes[-1]

    def _edge(self, e: int, x: Tensor, names: Sequence[str] | None, gates: Tensor | None) -> Tensor:
        branches = self.edges[e]
        names = list(branches) if names is None else list(names)
        if gates is not None and len(gates) != len(names):
            raise ValueError(f"edge {e}: got {len(gates)} gates for {len(names)} ops")
        out: Tensor | None = None
        for k, name in enumerate(names):
            y = branches[name](x)
            if gates is not None:
                y = y * gates[k]
            out = y if out is None else out + y
        return x.mul(0.0) if out is None else out


class ResBlock(nn.Module):
    """The reduction block between stages: a stride-2 ResNet basic block, avg-pool + 1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = relu_conv_bn(c_in, c_out, 3, stride=2)
        self.conv_b = relu_conv_bn(c_out, c_out, 3)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, stride=2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class Nb201Net(nn.Module):
    """Stem, 3 stages of N cells with reduction blocks between, last BN-ReLU, pool, classifier.

    Every cell holds the same ops per edge: the standalone net of one arch, or with all active
    ops the supernet (same module names, so a subnet takes the supernet's weights by name).
    """

    def __init__(self, space_cfg: dict, ops: Ops, num_classes: int) -> None:
        super().__init__()
        c, n, size, _ = net_config(space_cfg)
        per_edge = ops_per_edge(ops)
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        cells: list[nn.Module] = []
        self.stage_ends: list[int] = []
        shapes = stage_shapes(c, size)
        for s, (ch, _) in enumerate(shapes):
            if s > 0:
                cells.append(ResBlock(shapes[s - 1][0], ch))
            cells.extend(Cell(ch, per_edge) for _ in range(n))
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
        self.active = ops_per_edge(active)
        self.num_classes = n

    def forward(self, x: Tensor, ops: Ops, gates: Sequence[Tensor] | None = None) -> Tensor:
        """Logits of the arch `ops` (op names per edge); `gates[e][k]` scales op k of edge e in every cell."""
        per_edge = ops_per_edge(ops)
        for e, (names, active) in enumerate(zip(per_edge, self.active)):
            missing = [op for op in names if op not in active]
            if missing:
                raise ValueError(f"edge {e}: ops {missing} are not in the supernet's active {active}")
        if gates is not None and len(gates) != len(EDGES):
            raise ValueError(f"got gates for {len(gates)} edges, an NB201 cell has {len(EDGES)}")
        return self._classify(self._run(x, per_edge, gates)[-1])
