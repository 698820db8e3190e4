"""Graph cells of the mobile space: names, valid one-change mutations, analytic costs, build and run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nasstudy.spaces.mobile import MobileSpace, Supernet, build_net, count_params
from nasstudy.spaces.mobile_blocks import as_cell, build_op, mbconv_cost, op_cost, parse_op
from nasstudy.spaces.mobile_cells import MAX_NODES, Cell, make_cell, mutate_cell, parse_cell

torch.set_num_threads(1)

# Not conftest's `tiny_mobile` on purpose: 12 channels, a 2-op pool, 4 classes: the graph cells below
# are the ops under test.
CFG = {
    "name": "mobile",
    "stem_channels": 8,
    "stages": [{"channels": 8, "positions": 1, "stride": 1}, {"channels": 12, "positions": 2, "stride": 2}],
    "head_channels": 16,
    "pool": ["mb3_e3", "mb5_e1"],
    "k": 2,
    "image_size": 16,
    "num_classes": 4,
}
# Cells with every edge op, strided identity and pooling, expand 1, a 4-node graph, an MBConv-like cell.
CELLS = ["g3_0k5_0id-1k3d2", "g1_0max_0c1-1avg", "g6_0id_0k3_1c1-2k5d2", "g3_0k3", "g1_0id", "g3_0avg_0k5-1max"]


def test_names_are_canonical_and_bad_names_say_why():
    for name in CELLS:
        assert parse_cell(name).name == name
    # The two inner nodes are unconnected: both labelings are one cell, with one name.
    a = make_cell(3, 4, [(0, 1, "k3"), (0, 2, "avg"), (1, 3, "id"), (2, 3, "k5")])
    b = make_cell(3, 4, [(0, 1, "avg"), (0, 2, "k3"), (1, 3, "k5"), (2, 3, "id")])
    assert a != b and a.name == b.name and parse_cell(a.name) in (a, b)
    assert as_cell("mb5_e3_d2").name == "g3_0k5d2" and as_cell("mb3_e1") == parse_cell("g1_0k3")
    cases = {
        "g3_0k4": "kernel must be odd",
        "g3_0k3d1": "dilation >= 2",
        "g3_0conv": "unknown edge op",
        "g3_0k3_0id": "no outgoing edge",
        "g3_0k3-0id": "same pair",
        "g3_0k3_0k3_0k3_0k3": "node count",
        "g0_0k3": "expected g<expand>",
        "g3_k3": "not <source node><op>",
        "g3_0k3_1id-0avg": "write 'g3_0k3_0avg-1id'",
    }
    for name, why in cases.items():
        with pytest.raises(ValueError, match=why) as err:
            parse_cell(name)
        assert name in str(err.value) and "\n" not in str(err.value)


def _name(expand: int, nodes: int, edges) -> str:
    return Cell(expand, nodes, tuple(sorted(edges))).name


def _drop_node(cell: Cell, v: int) -> str:
    edges = [(s - (s > v), d - (d > v), op) for s, d, op in cell.edges if v not in (s, d)]
    return _name(cell.expand, cell.nodes - 1, edges)


def _one_change(parent: Cell, child: Cell, kind: str) -> bool:
    """Whether `child` is `parent` changed in exactly one way of `kind` (up to relabeling: names compare)."""
    p, c = parent, child
    if kind == "op":
        return p.expand == c.expand and any(
            _name(c.expand, c.nodes, c.edges[:i] + ((s, d, op),) + c.edges[i + 1 :]) == p.name
            for i, (s, d, cur) in enumerate(c.edges)
            for op in {e[2] for e in p.edges} - {cur}
        )
    if kind == "expand":
        return p.expand != c.expand and _name(p.expand, c.nodes, c.edges) == p.name
    if kind in ("add_edge", "remove_edge"):
        big, small = (c, p) if kind == "add_edge" else (p, c)
        fewer = [big.edges[:i] + big.edges[i + 1 :] for i in range(len(big.edges))]
        return big.nodes == small.nodes and any(_name(big.expand, big.nodes, es) == small.name for es in fewer)
    big, small = (c, p) if kind == "add_node" else (p, c)
    inner = range(1, big.nodes - 1)
    if kind == "add_node":  # the new node has one edge in and one out
        inner = [v for v in inner if sum(d == v for _, d, _ in big.edges) == 1 == sum(s == v for s, _, _ in big.edges)]
    return any(_drop_node(big, v) == small.name for v in inner)


def test_mutations_keep_a_valid_dag_and_change_exactly_one_thing():
    rng = np.random.default_rng(0)
    kinds, cell = set(), as_cell("mb3_e3")
    for step in range(400):
        child, kind = mutate_cell(cell, rng)
        assert parse_cell(child.name).name == child.name  # valid and canonical
        assert child.name != cell.name and 2 <= child.nodes <= MAX_NODES
        assert _one_change(cell, child, kind), (cell.name, child.name, kind)
        kinds.add(kind)
        cell = child if step % 50 else as_cell("mb5_e6")  # a random walk, restarted now and then
    assert kinds == {"op", "expand", "add_edge", "remove_edge", "add_node", "remove_node"}


def _macs(module: torch.nn.Module, x: torch.Tensor) -> float:
    with FlopCounterMode(display=False) as counter:
        module.eval()(x)
    return counter.get_total_flops() / 2 / len(x)  # FLOPs -> MACs, per image


@pytest.mark.parametrize("stride,size", [(1, 8), (2, 8), (2, 5)])
def test_analytic_cost_equals_the_built_module(stride, size):
    x = torch.randn(2, 8, size, size)
    for name in CELLS + ["mb5_e3_d2"]:
        module = build_op(name, 8, 12, stride)
        assert module(x).shape[-1] == (size - 1) // stride + 1
        macs, params = op_cost(name, 8, 12, stride, size)
        assert params == count_params(module), name
        assert macs == _macs(module, x), name
    for op in ("mb3_e3", "mb7_e6_d2", "mb5_e4"):  # an MBConv op costs what its one-edge cell does
        assert mbconv_cost(parse_op(op), 8, 12, 2, size) == op_cost(as_cell(op).name, 8, 12, 2, size)


def test_graph_cells_build_and_run_in_build_net_and_supernet():
    active = [["mb3_e3", CELLS[0], CELLS[2]], [CELLS[1], "mb5_e1"], [CELLS[5], CELLS[4]]]
    space = MobileSpace(CFG, {"positions": [{"active": a, "queue": []} for a in active]})
    x = torch.randn(3, 3, 16, 16)
    torch.manual_seed(0)
    supernet = Supernet(CFG, space.active)
    for m in supernet.modules():  # residual branches start at zero output: give them a scale
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(m.weight)
    rng = np.random.default_rng(1)
    with torch.no_grad():
        supernet.train()(x, space.ops((1,) * 7))  # BN running stats off their defaults
        supernet.eval()
        for arch in [(1,) * 7, *(space.sample(rng) for _ in range(4))]:
            ops = space.ops(arch)
            assert space.from_string(space.to_string(arch)) == arch
            net = build_net(CFG, ops, 4)
            assert space.params(arch) == count_params(net)
            assert space.flops(arch) == _macs(net, x)
            torch.testing.assert_close(supernet.subnet(ops).eval()(x), supernet(x, ops))
