"""AutoSpace (`evolution/autospace.py`): one generation per call on a tiny space and tiny random data."""

from __future__ import annotations

import json
from dataclasses import astuple

import numpy as np
import pytest
import torch

from nasstudy.evolution.autospace import FITNESS_COLUMNS, AutoSpaceConfig, autospace_round, references
from nasstudy.evolution.autospace_ops import DILATIONS, EXPANDS, KERNELS, mutate_op, op_name
from nasstudy.spaces.mobile import MobileSpace, Supernet, initial_state
from nasstudy.spaces.mobile_ops import parse_op
from nasstudy.tracking import MemoryTracker
from nasstudy.training import ClsData
from nasstudy.utils import make_rng

SPACE_CFG = {
    "name": "mobile",
    "stem_channels": 8,
    "stages": [{"channels": 8, "positions": 1, "stride": 1}, {"channels": 16, "positions": 2, "stride": 2}],
    "head_channels": 16,
    "pool": ["mb3_e1", "mb3_e3", "mb5_e1"],
    "k": 2,
    "image_size": 16,
    "num_classes": 3,
}
TRAIN = {"batch_size": 16, "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0, "bn_recal_batches": 1}
KNOBS = {"epochs": 2, "population": 5, "tournament": 2, "n_mutants": 2, "alpha_every": 1, "alpha_lr": 0.1}


def _data(n: int, seed: int) -> ClsData:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, 3, 16, 16, generator=g)
    x[torch.arange(n), y] += 1.5  # a learnable colour cue per class
    return ClsData(x, y)


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(1)
    return _data(48, 0), _data(24, 1)


def _gen(state: dict, data, gen: int, **knobs):
    """One generation with the per-generation seeds the stage would derive (seed, stage, method, gen)."""
    train, val = data
    cfg = AutoSpaceConfig.from_params({**KNOBS, **knobs})
    rng = make_rng(0, "evolve_space", "autospace", gen)
    batch_gen = torch.Generator().manual_seed(1000 + gen)
    return autospace_round(state, SPACE_CFG, train, val, cfg, TRAIN, rng, batch_gen, MemoryTracker())


@pytest.fixture(scope="module")
def three_gens(data):
    """Generations 1-3 in one process, each fed the previous state."""
    state, results = initial_state(SPACE_CFG), []
    for gen in (1, 2, 3):
        results.append(_gen(state, data, gen))
        state = results[-1].state
    return results


def test_reference_survives_every_generation(three_gens):
    refs = [p["active"][0] for p in initial_state(SPACE_CFG)["positions"]]
    for res in three_gens:
        assert [r["status"] for r in res.fitness] and all(set(r) == set(FITNESS_COLUMNS) for r in res.fitness)
        for i, pos in enumerate(res.state["positions"]):
            assert pos["reference"] == refs[i]
            assert refs[i] in pos["active"] and len(pos["active"]) == SPACE_CFG["k"]
            pop = [m["op"] for m in pos["population"]]
            assert refs[i] in pop and len(pop) == KNOBS["population"] == len(set(pop))
            assert [m["fitness"] for m in pos["population"] if m["op"] == refs[i]] == [0.0]
            assert set(pos["queue"]) == set(pop) - set(pos["active"])
            rows = [r for r in res.fitness if r["position"] == i]
            assert [r["op"] for r in rows if r["status"] == "reference"] == [refs[i]]
            assert sum(r["status"] == "new" for r in rows) >= KNOBS["n_mutants"]
            assert {r["status"] for r in rows} <= {"kept", "new", "dropped", "reference"}
        json.dumps(res.state)  # plain types only
    assert len(three_gens[-1].epochs) == KNOBS["epochs"]
    assert np.isfinite(three_gens[-1].summary["expected_flops"])


def test_mutants_are_new_ops_that_build_and_run(three_gens):
    pool = set(SPACE_CFG["pool"])
    new = {r["op"] for res in three_gens for r in res.fitness if r["status"] == "new"}
    assert new - pool, "mutation should create ops the initial pool lacked"
    x = _data(2, 5).images
    for res in three_gens:
        space = MobileSpace(SPACE_CFG, res.state)  # the pipeline's space accepts the learned state as it is
        assert space.flops(space.sample(np.random.default_rng(0))) > 0
        members = [[m["op"] for m in p["population"]] for p in res.state["positions"]]
        net = Supernet(SPACE_CFG, members).eval()
        with torch.no_grad():
            for j in range(max(len(m) for m in members)):
                ops = [[m[j % len(m)]] for m in members]
                assert torch.isfinite(net(x, ops)).all()
    # Every name mutation can produce, at the smallest resolution of the space.
    grid = [op_name(k, e, d) for k in KERNELS for e in EXPANDS for d in DILATIONS]
    assert [parse_op(op) for op in grid]
    net = Supernet(SPACE_CFG, [grid] * 3).eval()
    with torch.no_grad():
        assert torch.isfinite(net(x, [grid] * 3)).all()


def test_mutation_is_one_local_step():
    rng = np.random.default_rng(0)
    for parent in ("mb3_e1", "mb11_e6_d3", "mb5_e4", "mb3_e3_d2"):
        for _ in range(20):
            child = mutate_op(parent, rng)
            a, b = parse_op(parent), parse_op(child)
            assert child != parent and op_name(b.kernel, b.expand, b.dilation) == child
            moved = [
                (new, grid)
                for old, new, grid in zip(astuple(a), astuple(b), (KERNELS, EXPANDS, DILATIONS))
                if old != new
            ]
            assert len(moved) == 1 and moved[0][0] in moved[0][1]  # one attribute, onto its grid (e4 is off-grid)


def test_budget_term_moves_towards_the_budget(data):
    state = initial_state(SPACE_CFG)
    free = _gen(state, data, 1, epochs=1)
    tight = _gen(state, data, 1, epochs=1, flops_target=1.0e4, flops_lambda=1.0e-6)
    assert tight.summary["expected_flops"] < free.summary["expected_flops"]
    assert tight.epochs[-1]["expected_flops"] < free.epochs[-1]["expected_flops"]


def test_resume_between_generations_is_bit_identical(three_gens, data, tmp_path):
    first = _gen(initial_state(SPACE_CFG), data, 1)
    path = tmp_path / "gen1.json"
    path.write_text(json.dumps(first.state, sort_keys=True))
    second = _gen(json.loads(path.read_text()), data, 2)
    for mine, theirs in ((first, three_gens[0]), (second, three_gens[1])):
        assert mine.state == theirs.state
        assert mine.fitness == theirs.fitness
        assert mine.summary == theirs.summary
        assert torch.equal(mine.alpha, theirs.alpha)


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"\['popsize'\].*allowed:.*'population'"):
        AutoSpaceConfig.from_params({"popsize": 8})
    for key, value in (("population", 1), ("n_mutants", 9), ("fitness_ema", 0), ("keep_top", 99), ("tournament", 0)):
        with pytest.raises(ValueError, match=f"autospace.{key} ="):
            AutoSpaceConfig.from_params({key: value})
    with pytest.raises(ValueError, match="autospace.reference"):
        AutoSpaceConfig.from_params({"reference": ["mb3_e1", "conv3"]})
    state = initial_state(SPACE_CFG)
    with pytest.raises(ValueError, match="reference has 1 ops"):
        references(state, AutoSpaceConfig(reference=("mb3_e1",)))
    state["positions"][0]["reference"] = "mb3_e3"
    with pytest.raises(ValueError, match="differs from the state"):
        references(state, AutoSpaceConfig(reference=("mb3_e1",) * 3))


def test_weighted_forward_is_the_softmax_weighted_sum():
    from nasstudy.evolution.autospace import _forward
    from nasstudy.spaces.mobile_ops import global_pool

    torch.manual_seed(0)
    members = [["mb3_e1", "mb3_e3", "mb5_e1"]] * 3
    net = Supernet(SPACE_CFG, members).eval()
    for pos in net.positions:  # residual branches start at zero; make them count
        for branch in pos.branches.values():
            torch.nn.init.ones_(branch[-1][1].weight)
    alpha = torch.randn(3, 3)
    sel = [[0, 2], [1, 0, 2], [0]]
    x = _data(2, 3).images
    with torch.no_grad():
        h = net.stem(x)
        for i, pos in enumerate(net.positions):
            w = torch.softmax(alpha[i, sel[i]], 0)
            out = sum(w[n] * pos.branches[members[i][j]](h) for n, j in enumerate(sel[i]))
            h = out + h if pos.residual else out
        want = net.classifier(global_pool(net.head(h)))
        assert torch.allclose(_forward(net, x, alpha, sel, members, detach=True), want, atol=1e-5)
