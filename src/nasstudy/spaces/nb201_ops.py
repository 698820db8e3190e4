"""Building blocks of the NAS-Bench-201 network (Dong & Yang, ICLR 2020) and their analytic costs.

Layers follow the benchmark's own network (ReLU-conv-BN ops, ResNet basic blocks between stages),
so that the closed-form costs reproduce the published table: params include BN affine weights;
FLOPs are the MACs of every conv plus the linear classifier including its bias (pooling, BN, ReLU
and additions are not counted). Every conv edge counts, even one whose output reaches nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NUM_NODES = 4
# (source node, target node) of the six edges, in the order the arch string lists them.
EDGES: tuple[tuple[int, int], ...] = tuple((j, i) for i in range(1, NUM_NODES) for j in range(i))
_KERNEL = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}


def check_op(name: str) -> str:
    """The name itself, or a ValueError naming it when it is not an NB201 op."""
    if name not in OPS:
        raise ValueError(f"unknown NB201 op {name!r}: known ops are {list(OPS)}")
    return name


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
    return relu_conv_bn(channels, channels, _KERNEL[name])


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


def stage_shapes(channels: int, image_size: int) -> list[tuple[int, int]]:
    """(channels, feature size) of the three stages: C, 2C, 4C at sizes s, s/2, s/4."""
    return [(channels * 2**i, image_size // 2**i) for i in range(3)]


def op_cost(name: str, channels: int, size: int) -> tuple[int, int]:
    """(MACs, params) of one edge op in one cell; only the convs cost anything."""
    k = _KERNEL.get(check_op(name))
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
