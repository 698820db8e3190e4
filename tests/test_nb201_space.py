"""The nb201 space: benchmark strings, decisions, costs equal to the published table, real nets."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nasstudy.spaces import make_space
from nasstudy.spaces.nb201 import OPS, Nb201Space, initial_state, parse_arch_string
from nasstudy.spaces.nb201_net import Supernet, build_net, count_params, make_op

torch.set_num_threads(1)

TABLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201" / "nb201_cifar10.csv"
TINY = {"name": "nb201", "C": 4, "N": 1, "image_size": 8, "num_classes": 3}
BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


@pytest.fixture(scope="module")
def table() -> list[dict]:
    if not TABLE.is_file():
        pytest.skip(f"{TABLE} is absent")
    with open(TABLE, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def space() -> Nb201Space:
    return make_space({"name": "nb201"}, None)


def test_string_round_trip_over_the_whole_table(space: Nb201Space, table: list[dict]) -> None:
    archs = [space.from_string(row["arch"]) for row in table]
    assert [space.to_string(a) for a in archs] == [row["arch"] for row in table]
    assert len(set(archs)) == len(table) == 15_625


def test_known_string_and_malformed_ones(space: Nb201Space) -> None:
    arch = space.from_string(BEST)
    assert [o[0] for o in space.ops(arch)] == parse_arch_string(BEST)
    assert space.ops(arch)[3] == ("skip_connect",)
    bad = {
        "|nor_conv_3x3~0|+|none~0|none~1|": "3 '\\+'-separated",
        "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|": "unknown NB201 op 'conv'",
        "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|": "none~1",
        "|none~0|+|none~0|+|none~0|none~1|none~2|": "node 2 needs 2 inputs",
        "none~0|+|none~0|none~1|+|none~0|none~1|none~2|": "wrapped in",
        "|none|+|none~0|none~1|+|none~0|none~1|none~2|": "'none'",
    }
    for s, msg in bad.items():
        with pytest.raises(ValueError, match=msg):
            space.from_string(s)


def test_sample_mutate_encode_decode(space: Nb201Space) -> None:
    assert space.decision_sizes == [5] * 6 and space.num_positions == 6
    rng = np.random.default_rng(0)
    for _ in range(200):
        arch = space.sample(rng)
        child = space.mutate(arch, rng)
        assert sum(a != b for a, b in zip(arch, child)) == 1
        vec = space.encode(arch)
        assert vec.dtype == np.float32 and vec.shape == (30,) and vec.sum() == 6
        assert space.decode(vec) == arch
        assert space.decode(vec * 0.6 + rng.uniform(0, 0.5, 30)) == arch  # argmax per block
    with pytest.raises(ValueError):
        space.encode((5, 0, 0, 0, 0, 0))


def test_enumerate_is_the_whole_space(space: Nb201Space) -> None:
    archs = space.enumerate()
    assert len(archs) == len(set(archs)) == space.size() == 15_625
    assert len({space.to_string(a) for a in archs[::97]}) == len(archs[::97])


def test_params_and_flops_equal_the_table(space: Nb201Space, table: list[dict]) -> None:
    # The README rounds params_m to 6 and flops_m to 5 decimals: costs must agree to that rounding.
    for row in table:
        arch = space.from_string(row["arch"])
        assert abs(space.params(arch) / 1e6 - float(row["params_m"])) < 0.5e-6 + 1e-12, row["arch"]
        assert abs(space.flops(arch) / 1e6 - float(row["flops_m"])) < 0.5e-5 + 1e-12, row["arch"]


def _measured_macs(net: torch.nn.Module, size: int) -> float:
    with FlopCounterMode(display=False) as counter:
        net.eval()(torch.randn(2, 3, size, size))
    return counter.get_total_flops() / 2 / 2  # FLOPs -> MACs, per image


def test_analytic_costs_match_the_built_nets() -> None:
    space = Nb201Space(TINY)
    rng = np.random.default_rng(1)
    archs = [space.sample(rng) for _ in range(5)] + [space.from_string(BEST), space.from_string(ALL_NONE)]
    for arch in archs:
        net = space.build(arch)
        assert space.params(arch) == count_params(net)
        # The flop counter skips the classifier bias, which NB201 counts.
        assert space.flops(arch) == _measured_macs(net, 8) + TINY["num_classes"]
    full = make_space({"name": "nb201"}, None)
    assert (
        count_params(full.build(full.from_string(BEST))) == full.params(full.from_string(BEST)) == 1_531_546 - 243_040
    )


def test_build_forward_features_and_training_step() -> None:
    space = Nb201Space(TINY)
    net = space.build(space.from_string(BEST))
    x = torch.randn(2, 3, 8, 8)
    assert net(x).shape == (2, 3)
    assert space.build(space.from_string(BEST), num_classes=7)(x).shape == (2, 7)
    feats = net.features(x)
    assert [f.shape[1] for f in feats] == net.feature_channels == [4, 8, 16]
    assert [f.shape[-1] for f in feats] == [8, 4, 2]
    net.train()
    torch.nn.functional.cross_entropy(net(x), torch.tensor([0, 1])).backward()
    assert all(p.grad is not None for p in net.parameters())
    zero = make_op("none", 4)
    assert torch.equal(zero(x[:, :1].repeat(1, 4, 1, 1)), torch.zeros(2, 4, 8, 8))
    with pytest.raises(ValueError, match="image_size"):
        Nb201Space({**TINY, "image_size": 10})


def test_supernet_matches_standalone() -> None:
    space = Nb201Space(TINY)
    torch.manual_seed(0)
    supernet = Supernet(TINY, space.active)
    x = torch.randn(4, 3, 8, 8)
    rng = np.random.default_rng(2)
    archs = [space.sample(rng) for _ in range(3)] + [space.from_string(s) for s in (BEST, ALL_NONE)]
    archs.append(space.from_string("|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"))
    with torch.no_grad():
        supernet.train()
        for arch in archs:  # non-trivial BN running stats
            supernet(x, space.ops(arch))
        supernet.eval()
        outs = []
        for arch in archs:
            ops = space.ops(arch)
            out = supernet(x, ops)
            torch.testing.assert_close(supernet.subnet(ops).eval()(x), out)
            torch.testing.assert_close(supernet(x, ops, [torch.ones(1)] * 6), out)
            outs.append(out)
        assert not torch.allclose(outs[0], outs[1])
        # A standalone net built apart, given the supernet's weights by name, agrees too.
        net = build_net(TINY, space.ops(archs[0]), 3)
        net.load_state_dict({k: v for k, v in supernet.state_dict().items() if k in net.state_dict()})
        torch.testing.assert_close(net.eval()(x), outs[0])
    with pytest.raises(ValueError, match="not in the supernet"):
        Supernet(TINY, [["none", "skip_connect"]] * 6)(x, [("nor_conv_3x3",)] * 6)


def test_supernet_checkpoint_round_trip() -> None:
    space = Nb201Space(TINY)
    supernet = Supernet(TINY, space.active).eval()
    buf = io.BytesIO()
    torch.save(supernet.to_model_file(), buf)
    buf.seek(0)
    again = Supernet.from_model_file(torch.load(buf, weights_only=True)).eval()
    x, ops = torch.randn(2, 3, 8, 8), space.ops(space.from_string(BEST))
    torch.testing.assert_close(again(x, ops), supernet(x, ops))


def test_subspaces() -> None:
    cfg = {**TINY, "initial_ops": ["nor_conv_3x3", "skip_connect"]}
    state = initial_state(cfg)
    assert state["edges"][0] == {
        "active": ["nor_conv_3x3", "skip_connect"],
        "queue": ["none", "nor_conv_1x1", "avg_pool_3x3"],
    }
    space = make_space(cfg, state)
    assert space.decision_sizes == [2] * 6 and space.size() == len(space.enumerate()) == 64
    assert space.encode((0,) * 6).shape == (12,)
    with pytest.raises(ValueError, match="'none' on edge 0->1 is not active"):
        space.from_string(ALL_NONE)
    sizes = [1, 2, 3, 4, 5, 1]
    mixed = {"edges": [{"active": list(OPS[:k]), "queue": list(OPS[k:])} for k in sizes]}
    space = Nb201Space(TINY, mixed)
    assert space.decision_sizes == sizes and len(space.enumerate()) == 120
    rng = np.random.default_rng(3)
    for _ in range(50):
        arch = space.sample(rng)
        child = space.mutate(arch, rng)
        assert sum(a != b for a, b in zip(arch, child)) == 1 and child[0] == child[5] == 0
        assert space.from_string(space.to_string(arch)) == arch
        assert space.decode(space.encode(arch)) == arch
    assert Supernet(TINY, space.active)(torch.randn(1, 3, 8, 8), space.ops(arch)).shape == (1, 3)
    with pytest.raises(ValueError, match="single arch"):
        Nb201Space(TINY, {"edges": [{"active": ["none"], "queue": []}] * 6}).mutate((0,) * 6, rng)
    with pytest.raises(ValueError, match="unknown NB201 op 'conv'"):
        initial_state({**TINY, "initial_ops": ["conv"]})
    with pytest.raises(ValueError, match="6 entries"):
        Nb201Space(TINY, {"edges": state["edges"][:5]})
