"""GA-NAS on the toy space: the generator learns the top-k, proposals are new, resume is exact,
and it beats random search; a short run on the real NAS-Bench-201 table when it is there."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from toy_space import OPTIMUM, ToySpace, score

from nasstudy.methods.ganas import GANAS
from nasstudy.methods.random_search import RandomSearch
from nasstudy.utils import make_rng

NB201_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201" / "nb201_cifar10.csv"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks: one thread is fastest and keeps runs bit-identical."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make(seed: int = 0, space=None, **knobs) -> GANAS:
    return GANAS(space or ToySpace(), make_rng(seed, "test", "ganas"), **knobs)


def run(method, queries: int, batch: int = 5) -> None:
    while len(method.history) < queries:
        archs = method.ask(min(batch, queries - len(method.history)))
        method.tell(archs, [score(a) for a in archs])


def queries_to_optimum(method, budget: int = 729) -> int:
    while len(method.history) < budget:
        archs = method.ask(1)
        method.tell(archs, [score(a) for a in archs])
        if archs[0] == OPTIMUM:
            return len(method.history)
    return budget


def test_generator_learns_the_top_k():
    for seed in range(3):
        method = make(seed)
        run(method, method.knobs["initial"])  # random warm-up, generator untrained
        start = method.log_prob(method.top()).mean()
        assert start == pytest.approx(-6 * math.log(3), abs=0.5)  # about uniform
        trace = [start]
        for queries in (40, 60, 80):
            run(method, queries)
            trace.append(method.log_prob(method.top()).mean())
        assert trace[-1] > start + 1.5, trace
        assert method.iterations >= 6


def test_proposals_are_new_and_valid():
    method = make(1, batch=8)
    run(method, 300, batch=7)  # batches that straddle iterations
    archs = [a for a, _ in method.history]
    assert len(set(archs)) == 300
    assert all(len(a) == 6 and all(isinstance(x, int) and 0 <= x < 3 for x in a) for a in archs)
    # a batch asked before its tell holds no repeats either, across several iterations
    batch = method.ask(30)
    assert len(set(batch)) == 30 and not set(batch) & method.seen


def test_first_ask_larger_than_initial():
    method = make(2, initial=5)
    archs = method.ask(12)  # nothing told yet: uniform samples fill in
    assert len(set(archs)) == 12
    method.tell(archs, [score(a) for a in archs])
    assert len(set(method.ask(12)) | set(archs)) == 24


def test_same_seed_same_run_and_global_torch_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a, b = make(4), make(4)
    run(a, 60)
    run(b, 60)
    assert a.history == b.history
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("knobs", [{}, {"ppo_clip": 0.2, "ppo_epochs": 2}])
def test_state_round_trip_resumes_exactly(knobs):
    straight = make(3, **knobs)
    run(straight, 70, batch=3)

    first = make(3, **knobs)
    run(first, 36, batch=3)  # mid-iteration: some of the last batch not yet asked
    assert first.pending
    state = json.loads(json.dumps(first.state_dict()))
    resumed = make(99, **knobs)  # another rng and other initial weights: the state must overwrite both
    resumed.load_state_dict(state)
    run(resumed, 70, batch=3)
    assert resumed.history == straight.history
    assert resumed.best() == straight.best()
    top = straight.top()
    assert np.array_equal(resumed.log_prob(top), straight.log_prob(top))


def test_load_state_refuses_other_knobs():
    state = make().state_dict()
    with pytest.raises(ValueError, match="config"):
        make(top_k=5).load_state_dict(state)


def test_bad_knobs():
    with pytest.raises(ValueError, match="top_k"):
        make(top_k=0)
    with pytest.raises(ValueError, match="baseline_decay"):
        make(baseline_decay=1.0)
    with pytest.raises(ValueError, match="lr_gen"):
        make(lr_gen=0.0)


def test_beats_random_on_average():
    seeds = range(5)
    ganas = [queries_to_optimum(make(s)) for s in seeds]
    rnd = [queries_to_optimum(RandomSearch(ToySpace(), make_rng(s, "test", "ganas"))) for s in seeds]
    assert np.mean(ganas) < 0.5 * np.mean(rnd), (ganas, rnd)


def test_nb201_table_short_run():
    nb201 = pytest.importorskip("nasstudy.spaces.nb201")
    if not NB201_CSV.is_file():
        pytest.skip(f"{NB201_CSV} not present")
    from nasstudy.evaluators import TableEvaluator

    space = nb201.Nb201Space({})
    table = TableEvaluator(NB201_CSV, space, "cifar10_valid_acc")
    accs = np.array([float(row["cifar10_valid_acc"]) for row in table.rows.values()])
    for seed in range(2):
        method = make(seed, space=space)
        while len(method.history) < 200:
            archs = method.ask(10)
            method.tell(archs, [table.evaluate(a) for a in archs])
        assert len(method.seen) == 200
        rank = int((accs > method.best()[1]["acc"]).sum())
        assert rank < len(accs) // 100, rank  # top 1% after 200 of 15,625 (random: about top 1/201)
