"""Building blocks of the `mobile` space: op names, MBConv, the multi-branch position, analytic costs.

Kept apart from `mobile.py` so that the space logic (decisions, strings, costs) stays short and the
modules are shared by the standalone net and the supernet (same names, so weights copy across).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

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


class Position(nn.Module):
    """One position: mean of the chosen branches, plus the identity when the shape is kept.

    An empty choice is a skip (identity) or, where the shape changes, a 1x1 strided projection, so
    every subset of branches is a valid network. `proj` is built only where it can be needed.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, ops: Sequence[str], proj: bool) -> None:
        super().__init__()
        self.residual = stride == 1 and c_in == c_out
        self.branches = nn.ModuleDict({op: MBConv(parse_op(op), c_in, c_out, stride) for op in ops})
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
    costs = [mbconv_cost(parse_op(op), c_in, c_out, stride, in_size) for op in ops]
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
