"""AutoSpace (`evolution/autospace_supernet.py`): one generation per call on a tiny space and tiny random data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers.tiny_inputs import SPACE_CFG  # a constant, not conftest's fixture: _gen() needs it

from nasstudy.evolution.autospace_population import evolve_position, mutate_op
from nasstudy.evolution.autospace_supernet import FITNESS_COLUMNS, AutoSpaceConfig, autospace_round, references
from nasstudy.spaces.mobile import MobileSpace, Supernet, initial_state
from nasstudy.tracking import MemoryTracker
from nasstudy.training import ClsData
from nasstudy.utils import make_rng

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


def test_mutants_are_new_graph_cells_that_build_and_run(three_gens):
    from nasstudy.spaces.mobile_blocks import as_cell
    from nasstudy.spaces.mobile_cells import parse_cell

    new = [r["op"] for res in three_gens for r in res.fitness if r["status"] == "new"]
    assert new and all(parse_cell(op).name == op for op in new)  # canonical graph cells, not MBConv ops
    assert any(parse_cell(op).nodes > 2 for op in new), "mutation should grow graphs, not only swap one op"
    x = _data(2, 5).images
    for res in three_gens:
        space = MobileSpace(SPACE_CFG, res.state)  # the pipeline's space accepts the learned state as it is
        assert space.flops(space.sample(np.random.default_rng(0))) > 0
        members = [[m["op"] for m in p["population"]] for p in res.state["positions"]]
        # One cell per member: a mutant never duplicates a member, not even an MBConv op's one-edge cell.
        assert all(len({as_cell(op).name for op in ops}) == len(ops) for ops in members)
        net = Supernet(SPACE_CFG, members).eval()
        with torch.no_grad():
            for j in range(max(len(m) for m in members)):
                ops = [[m[j % len(m)]] for m in members]
                assert torch.isfinite(net(x, ops)).all()


def test_mutate_op_reads_mbconv_ops_and_cells():
    rng = np.random.default_rng(0)
    for parent in ("mb3_e1", "mb11_e6_d3", "mb5_e4", "g3_0k5_0id-1k3d2"):
        children = {mutate_op(parent, rng) for _ in range(20)}
        assert all(c.startswith("g") for c in children) and len(children) > 5


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
    from nasstudy.evolution.autospace_supernet import _forward
    from nasstudy.spaces.mobile_blocks import global_pool

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


# evolve_position, the generation-end rule, on its own: fitness update, survival, ranking, size.
REF = "mb3_e3"
POP = [REF, "g3_0k5_0id-1k3d2", "mb5_e1", "g1_0max_0c1-1avg", "g6_0k3", "g3_0k3_1c1"]


def _evolve(fitness, rel, evidence=None, keep_top=3, **knobs):
    cfg = AutoSpaceConfig.from_params({"population": 6, "n_mutants": 2, "survive_margin": 1.0, **knobs})
    members = [{"op": op, "fitness": float(f), "age": 1} for op, f in zip(POP, fitness)]
    evidence = np.ones(len(POP), bool) if evidence is None else np.asarray(evidence)
    picks = np.arange(len(POP))
    return evolve_position(members, ["mb7_e3"], REF, np.asarray(rel, float), evidence, picks, cfg, keep_top,
                           np.random.default_rng(0))  # fmt: skip


def test_evolve_position_updates_fitness_only_on_evidence_and_ranks_by_it():
    state, rows = _evolve([0, 0.4, 0.6, 2.0, 0.2, 0.2], [0, 1.0, 0.6, -4.0, 0.2, 9.0], [1, 1, 1, 1, 1, 0])
    fit = {r["op"]: r["fitness"] for r in rows if r["status"] != "new"}
    # (1 - 0.5) * old + 0.5 * relative alpha; the last member had no evidence and keeps its fitness.
    assert fit == {REF: 0.0, POP[1]: 0.7, POP[2]: 0.6, POP[3]: -1.0, POP[4]: 0.2, POP[5]: 0.2}
    status = {r["op"]: r["status"] for r in rows if r["status"] != "new"}
    # -1.0 is not below -margin, but at least n_mutants = 2 go: the two weakest (a tie: the earlier one).
    assert [op for op, s in status.items() if s == "dropped"] == [POP[3], POP[4]]
    # The top keep_top by fitness, the reference forced into the last place.
    assert state["active"] == [POP[1], POP[2], REF]
    new = [r["op"] for r in rows if r["status"] == "new"]
    assert state["queue"] == [POP[5], *new, "mb7_e3"]  # the rest by fitness, new mutants, untried ops
    assert [m["op"] for m in state["population"]] == [REF, POP[1], POP[2], POP[5], *new]
    assert [m["age"] for m in state["population"]] == [2, 2, 2, 2, 0, 0]


def test_evolve_position_keeps_the_reference_whatever_the_fitness():
    # Every candidate beats the reference: it still survives, in the active list's last place.
    state, rows = _evolve([0, 3, 2, 4, 5, 6], [0, 3, 2, 4, 5, 6], keep_top=2)
    assert state["active"] == [POP[5], REF] and state["reference"] == REF
    assert {"op": REF, "fitness": 0.0, "age": 2} in state["population"]
    # Every candidate far below the reference: all are replaced, the learned space is the reference alone.
    state, rows = _evolve([0, -3, -2, -4, -5, -6], [0, -3, -2, -4, -5, -6], n_mutants=1)
    assert state["active"] == [REF] and sum(r["status"] == "dropped" for r in rows) == 5
    assert len(state["population"]) == 6 and state["population"][0]["op"] == REF


def test_budget_term_penalises_the_costly_cells_and_they_drop_out():
    from nasstudy.evolution.autospace_supernet import FlopsModel, _relative, budget_penalty

    members = [POP] * 3
    flops = FlopsModel(SPACE_CFG, members, len(POP))
    cost = flops.cost.sum(0)  # a member's MACs summed over the positions
    alpha = torch.zeros(3, len(POP), requires_grad=True)
    mask = torch.ones(3, len(POP), dtype=torch.bool)
    cfg = AutoSpaceConfig(flops_target=flops.fixed + flops.cost.min(1).sum(), flops_lambda=1e-9)
    opt = torch.optim.Adam([alpha], lr=0.1)
    for _ in range(20):
        opt.zero_grad()
        budget_penalty(alpha, mask, flops, cfg).backward()
        opt.step()
    rel = _relative(alpha, [0, 0, 0]).mean(0)
    costly = [POP[j] for j in range(1, 6) if cost[j] > cost[0]]  # costlier than the reference (3 of 5)
    assert len(costly) == 3 and all((rel[j] < 0) == (POP[j] in costly) for j in range(1, 6))
    state, rows = _evolve([0] * 6, rel, n_mutants=3)  # the three weakest go: exactly the costly ones
    assert [r["op"] for r in rows if r["status"] == "dropped"] == costly
    assert REF in state["active"] and not set(costly) & set(state["queue"])
