"""The mobile space: decisions, strings, analytic costs, every subset valid, supernet = standalone net."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nasstudy.spaces import make_space
from nasstudy.spaces.mobile import MobileSpace, Supernet, build_net, count_params, initial_state
from nasstudy.spaces.mobile_blocks import parse_op

torch.set_num_threads(1)

# Not conftest's `tiny_mobile` on purpose: three stages and k = 3 of 5 ops (a queue, a dilated op, a
# 7x7 kernel), 4 classes: more of the space's decisions to check.
CFG = {
    "name": "mobile",
    "stem_channels": 8,
    "stages": [
        {"channels": 8, "positions": 1, "stride": 1},
        {"channels": 12, "positions": 2, "stride": 2},
        {"channels": 16, "positions": 1, "stride": 2},
    ],
    "head_channels": 16,
    "pool": ["mb3_e3", "mb5_e1", "mb3_e2_d2", "mb5_e3", "mb7_e1"],
    "k": 3,
    "image_size": 16,
    "num_classes": 4,
}


@pytest.fixture
def space() -> MobileSpace:
    return make_space(CFG, initial_state(CFG))


def test_parse_op_and_unknown_names() -> None:
    assert parse_op("mb5_e3").kernel == 5 and parse_op("mb5_e3").expand == 3
    assert parse_op("mb3_e3_d2").dilation == 2
    for bad in ["conv3", "mb4_e3", "mb3_e0", "mb3"]:
        with pytest.raises(ValueError, match=bad):
            parse_op(bad)
    with pytest.raises(ValueError, match="nope"):
        make_space({**CFG, "name": "nope"}, initial_state(CFG))


def test_initial_state_and_decisions(space: MobileSpace) -> None:
    state = initial_state(CFG)
    assert len(state["positions"]) == space.num_positions == 4
    assert state["positions"][0] == {"active": CFG["pool"][:3], "queue": CFG["pool"][3:]}
    assert space.decision_sizes == [2] * 12


def test_sample_mutate_encode_decode(space: MobileSpace) -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        arch = space.sample(rng)
        assert len(arch) == 12 and set(arch) <= {0, 1}
        child = space.mutate(arch, rng)
        assert sum(a != b for a, b in zip(arch, child)) == 1
        vec = space.encode(arch)
        assert vec.dtype == np.float32 and space.decode(vec) == arch
        assert space.decode(vec * 0.99 + 0.3) == arch  # floor of a continuous vector
        s = space.to_string(arch)
        assert space.from_string(s) == arch
    assert space.to_string((0,) * 12) == "skip|skip|skip|skip"
    assert space.from_string("mb3_e2_d2+mb3_e3|skip|skip|skip")[:3] == (1, 0, 1)
    with pytest.raises(ValueError, match="mb5_e3"):
        space.from_string("mb5_e3|skip|skip|skip")


def _measured_macs(net: torch.nn.Module) -> float:
    x = torch.randn(2, 3, CFG["image_size"], CFG["image_size"])
    with FlopCounterMode(display=False) as counter:
        net.eval()(x)
    return counter.get_total_flops() / 2 / 2  # FLOPs -> MACs, per image


def test_analytic_flops_and_params(space: MobileSpace) -> None:
    rng = np.random.default_rng(1)
    archs = [space.sample(rng) for _ in range(5)] + [(0,) * 12, (1,) * 12]
    for arch in archs:
        net = build_net(CFG, space.ops(arch), CFG["num_classes"])
        assert space.params(arch) == count_params(net)
        assert space.flops(arch) == _measured_macs(net)
    assert space.flops((1,) * 12) > space.flops((0,) * 12)


def test_every_subset_builds_and_runs(space: MobileSpace) -> None:
    x = torch.randn(2, 3, 16, 16)
    supernet = Supernet(CFG, space.active).eval()
    for pos in range(space.num_positions):
        for r in range(len(space.active[pos]) + 1):
            for subset in itertools.combinations(space.active[pos], r):
                ops = [()] * space.num_positions
                ops[pos] = subset
                assert build_net(CFG, ops, 4).eval()(x).shape == (2, 4)
                assert supernet(x, ops).shape == (2, 4)


def test_supernet_matches_standalone_and_depends_on_path(space: MobileSpace) -> None:
    torch.manual_seed(0)
    supernet = Supernet(CFG, space.active)
    rng = np.random.default_rng(2)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        supernet.train()
        for _ in range(3):  # give BN running stats non-trivial values
            supernet(x, space.ops((1,) * 12))
        supernet.eval()
        outs = []
        for _ in range(3):
            ops = space.ops(space.sample(rng))
            out = supernet(x, ops)
            torch.testing.assert_close(supernet.subnet(ops).eval()(x), out)
            gates = [torch.ones(len(o)) for o in ops]
            torch.testing.assert_close(supernet(x, ops, gates), out)
            outs.append(out)
        assert not torch.allclose(outs[0], outs[1])


def test_gates_carry_gradient(space: MobileSpace) -> None:
    supernet = Supernet(CFG, space.active)
    for m in supernet.modules():  # residual branches start at zero output: give them a scale
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(m.weight)
    ops = space.ops((1,) * 12)
    gates = [torch.ones(len(o), requires_grad=True) for o in ops]
    supernet(torch.randn(2, 3, 16, 16), ops, gates).sum().backward()
    assert all(g.grad is not None and g.grad.abs().sum() > 0 for g in gates)


def test_features_strides(space: MobileSpace) -> None:
    net = build_net(CFG, space.ops(space.sample(np.random.default_rng(3))), 4)
    feats = net.features(torch.randn(1, 3, 32, 32))
    assert [f.shape[1] for f in feats] == net.feature_channels == [8, 12, 16]
    assert [f.shape[-1] for f in feats] == [32, 16, 8]


def test_checkpoint_round_trip(space: MobileSpace) -> None:
    supernet = Supernet(CFG, space.active).eval()
    buf = io.BytesIO()
    torch.save(supernet.to_model_file(), buf)
    buf.seek(0)
    again = Supernet.from_model_file(torch.load(buf, weights_only=True)).eval()
    x, ops = torch.randn(2, 3, 16, 16), space.ops((1,) * 12)
    torch.testing.assert_close(again(x, ops), supernet(x, ops))
