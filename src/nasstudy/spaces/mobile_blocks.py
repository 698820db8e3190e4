"""The torch building blocks of the `mobile` space: op names, MBConv and graph-cell modules, the
multi-branch position, and their analytic costs.

Kept apart from `mobile.py` so that the space logic (decisions, strings, costs) stays short and the
modules are shared by the standalone net and the supernet (same names, so weights copy across).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nasstudy.spaces.mobile_cells import Cell, dw_op, edge_op, is_cell_name, make_cell, parse_cell

_OP_RE = re.compile(r"^mb(\d+)_e(\d+)(?:_d(\d+))?$")


@dataclass(frozen=True)
class OpSpec:
    """An MBConv op: depthwise kernel size, expansion ratio, depthwise dilation."""

    kernel: int
    expand: int
    dilation: int = 1


def parse_op(name: str) -> OpSpec:
    """Parse `mb{k}_e{e}` or `mb{k}_e{e}_d{d}`; a name outside the pool grammar is an error, not a skip."""
    m = _OP_RE.match(name)
    if m is None:
        raise ValueError(f"unknown op {name!r}: expected mb{{k}}_e{{e}} or mb{{k}}_e{{e}}_d{{d}}")
    k, e, d = int(m.group(1)), int(m.group(2)), int(m.group(3) or 1)
    if k < 1 or k % 2 == 0 or e < 1 or d < 1:
        raise ValueError(f"unknown op {name!r}: kernel must be odd, expand and dilation >= 1")
    return OpSpec(k, e, d)


def out_size(size: int, stride: int) -> int:
    """Spatial size after a 'same'-padded conv with odd kernel (what every conv here is)."""
    return (size - 1) // stride + 1


def conv_bn(
    c_in: int, c_out: int, k: int, stride: int = 1, dilation: int = 1, groups: int = 1, act: bool = True
) -> nn.Sequential:
    """Conv (no bias) + BN (+ ReLU6): the unit every layer of the space is made of."""
    pad = dilation * (k - 1) // 2
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, k, stride, pad, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


def conv_bn_cost(c_in: int, c_out: int, k: int, groups: int, out_hw: int) -> tuple[int, int]:
    """(MACs, params) of conv_bn: conv MACs only; params = conv weight + BN weight and bias."""
    weights = c_out * (c_in // groups) * k * k
    return out_hw * out_hw * weights, weights + 2 * c_out


class MBConv(nn.Sequential):
    """Inverted bottleneck without its own residual (the position adds the identity)."""

    def __init__(self, spec: OpSpec, c_in: int, c_out: int, stride: int) -> None:
        hidden = c_in * spec.expand
        layers: list[nn.Module] = []
        if spec.expand != 1:
            layers.append(conv_bn(c_in, hidden, 1))
        layers.append(conv_bn(hidden, hidden, spec.kernel, stride, spec.dilation, groups=hidden))
        layers.append(conv_bn(hidden, c_out, 1, act=False))
        super().__init__(*layers)


def mbconv_cost(spec: OpSpec, c_in: int, c_out: int, stride: int, in_size: int) -> tuple[int, int]:
    """(MACs, params) of one MBConv branch at input resolution `in_size`."""
    hidden = c_in * spec.expand
    out = out_size(in_size, stride)
    parts = []
    if spec.expand != 1:
        parts.append(conv_bn_cost(c_in, hidden, 1, 1, in_size))
    parts.append(conv_bn_cost(hidden, hidden, spec.kernel, hidden, out))
    parts.append(conv_bn_cost(hidden, c_out, 1, 1, out))
    return sum(p[0] for p in parts), sum(p[1] for p in parts)


def as_cell(name: str) -> Cell:
    """The graph cell an op name stands for: an MBConv `mb{k}_e{e}[_d{d}]` is the one-edge cell."""
    if is_cell_name(name):
        return parse_cell(name)
    spec = parse_op(name)
    return make_cell(spec.expand, 2, [(0, 1, dw_op(spec.kernel, spec.dilation))])


def check_op(name: str) -> None:
    """Raise if `name` is neither an MBConv op nor a valid canonical graph cell."""
    as_cell(name)


class Subsample(nn.Module):
    """The identity edge out of a strided cell's input: every `stride`-th pixel (no weights, no MACs)."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :, :: self.stride, :: self.stride]


def _edge(op: str, ch: int, stride: int) -> nn.Module:
    kind, k, d = edge_op(op)
    if kind == "dw":
        return conv_bn(ch, ch, k, stride, d, groups=ch)
    if kind == "c1":
        return conv_bn(ch, ch, 1, stride)
    if kind == "avg":
        return nn.AvgPool2d(3, stride, 1, count_include_pad=False)
    if kind == "max":
        return nn.MaxPool2d(3, stride, 1)
    return nn.Identity() if stride == 1 else Subsample(stride)


def _edge_cost(op: str, ch: int, out_hw: int) -> tuple[int, int]:
    kind, k, _ = edge_op(op)
    if kind in ("dw", "c1"):
        return conv_bn_cost(ch, ch, k, ch if kind == "dw" else 1, out_hw)
    return 0, 0  # identity and pooling: no weights, no MACs (as BN and adds are not counted)


class CellGraph(nn.Module):
    """The DAG of a cell: node j = sum of its incoming edges; edges out of node 0 carry the stride."""

    def __init__(self, cell: Cell, ch: int, stride: int) -> None:
        super().__init__()
        self.cell = cell
        self.edges = nn.ModuleDict({f"{s}_{d}": _edge(op, ch, stride if s == 0 else 1) for s, d, op in cell.edges})

    def forward(self, x: Tensor) -> Tensor:
        nodes = [x]
        for j in range(1, self.cell.nodes):
            ins = [self.edges[f"{s}_{d}"](nodes[s]) for s, d, _ in self.cell.edges if d == j]
            nodes.append(sum(ins[1:], ins[0]))
        return nodes[-1]


class GraphCell(nn.Sequential):
    """A graph cell as MBConv is built: 1x1 expansion (unless expand is 1), the DAG, 1x1 projection."""

    def __init__(self, cell: Cell, c_in: int, c_out: int, stride: int) -> None:
        hidden = c_in * cell.expand
        layers: list[nn.Module] = [conv_bn(c_in, hidden, 1)] if cell.expand != 1 else []
        layers += [CellGraph(cell, hidden, stride), conv_bn(hidden, c_out, 1, act=False)]
        super().__init__(*layers)


def graph_cell_cost(cell: Cell, c_in: int, c_out: int, stride: int, in_size: int) -> tuple[int, int]:
    """(MACs, params) of one GraphCell branch at input resolution `in_size`."""
    hidden, out = c_in * cell.expand, out_size(in_size, stride)
    parts = [conv_bn_cost(c_in, hidden, 1, 1, in_size)] if cell.expand != 1 else []
    parts += [_edge_cost(op, hidden, out) for _, _, op in cell.edges]
    parts.append(conv_bn_cost(hidden, c_out, 1, 1, out))
    return sum(p[0] for p in parts), sum(p[1] for p in parts)


def build_op(name: str, c_in: int, c_out: int, stride: int) -> nn.Module:
    """The branch module of an op name: MBConv for `mb...`, GraphCell for `g...`."""
    if is_cell_name(name):
        return GraphCell(parse_cell(name), c_in, c_out, stride)
    return MBConv(parse_op(name), c_in, c_out, stride)


def op_cost(name: str, c_in: int, c_out: int, stride: int, in_size: int) -> tuple[int, int]:
    """(MACs, params) of the branch `build_op` builds."""
    if is_cell_name(name):
        return graph_cell_cost(parse_cell(name), c_in, c_out, stride, in_size)
    return mbconv_cost(parse_op(name), c_in, c_out, stride, in_size)


class Position(nn.Module):
    """One position: mean of the chosen branches, plus the identity when the shape is kept.

    An empty choice is a skip (identity) or, where the shape changes, a 1x1 strided projection, so
    every subset of branches is a valid network. `proj` is built only where it can be needed.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, ops: Sequence[str], proj: bool) -> None:
        super().__init__()
        self.residual = stride == 1 and c_in == c_out
        self.branches = nn.ModuleDict({op: build_op(op, c_in, c_out, stride) for op in ops})
        self.proj = conv_bn(c_in, c_out, 1, stride, act=False) if proj and not self.residual else None
        if self.residual:
            # Residual branches start at zero (last BN scale 0): every sampled path starts as the
            # identity, which lets a supernet trained on random subsets learn in a few epochs.
            for branch in self.branches.values():
                nn.init.zeros_(branch[-1][1].weight)

    def forward(self, x: Tensor, ops: Sequence[str] | None = None, gates: Tensor | None = None) -> Tensor:
        names = list(self.branches) if ops is None else list(ops)
        if not names:
            if self.residual:
                return x
            if self.proj is None:
                raise ValueError("empty op subset at a shape-changing position built without projection")
            return self.proj(x)
        if gates is not None and len(gates) != len(names):
            raise ValueError(f"got {len(gates)} gates for {len(names)} ops")
        out: Tensor | None = None
        for i, name in enumerate(names):
            y = self.branches[name](x)
            if gates is not None:
                y = y * gates[i]
            out = y if out is None else out + y
        assert out is not None
        out = out / len(names)
        return out + x if self.residual else out


def position_cost(ops: Sequence[str], c_in: int, c_out: int, stride: int, in_size: int) -> tuple[int, int]:
    """(MACs, params) of a position as `build_net` builds it for this op subset."""
    if not ops:
        if stride == 1 and c_in == c_out:
            return 0, 0
        return conv_bn_cost(c_in, c_out, 1, 1, out_size(in_size, stride))
    costs = [op_cost(op, c_in, c_out, stride, in_size) for op in ops]
    return sum(c[0] for c in costs), sum(c[1] for c in costs)


def stem_and_head(
    c_stem: int, stem_stride: int, c_last: int, c_head: int, num_classes: int
) -> tuple[nn.Module, nn.Module, nn.Module]:
    """Stem conv, head 1x1 conv and classifier: the fixed parts of every net of the space."""
    stem = conv_bn(3, c_stem, 3, stem_stride)
    head = conv_bn(c_last, c_head, 1)
    classifier = nn.Linear(c_head, num_classes)
    return stem, head, classifier


def fixed_cost(
    image_size: int, c_stem: int, stem_stride: int, c_last: int, c_head: int, last_size: int, num_classes: int
) -> tuple[int, int]:
    """(MACs, params) of stem + head + classifier."""
    s = conv_bn_cost(3, c_stem, 3, 1, out_size(image_size, stem_stride))
    h = conv_bn_cost(c_last, c_head, 1, 1, last_size)
    lin = (c_head * num_classes, c_head * num_classes + num_classes)
    return s[0] + h[0] + lin[0], s[1] + h[1] + lin[1]


def global_pool(x: Tensor) -> Tensor:
    """Global average pool to (N, C)."""
    return torch.flatten(x.mean(dim=(2, 3)), 1)
