"""Search methods on a toy space: the ask/tell contract, REA's mechanics, resumable state."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from helpers.toy_space import OPTIMUM, ToySpace, score

from nasstudy.methods import METHODS, make_method, method_class
from nasstudy.utils import make_rng

REA = {"population": 10, "tournament": 3}


def make(name: str, seed: int = 0, **knobs):
    params = knobs or (REA if name == "rea" else {})
    return make_method(name, ToySpace(), params, make_rng(seed, "test", name))


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


def test_registry_resolves_every_method():
    assert set(METHODS) == {"random", "rea", "relativenas", "ganas", "weaknas"}
    for name in METHODS:
        assert method_class(name).name == name


def test_table_methods_import_no_torch():
    """random, rea and relativenas against a table must not pay torch's import (a second per bench job)."""
    code = (
        "import sys; from nasstudy.methods import method_class; from nasstudy.benchmarks import search; "
        "[method_class(m) for m in ('random', 'rea', 'relativenas')]; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_registry_and_errors():
    assert {"random", "rea"} <= set(METHODS)
    with pytest.raises(ValueError, match=r"'nope'.*allowed: .*random.*rea"):
        make("nope")
    with pytest.raises(ValueError, match=r"\['search'\].*'rea'.*population, tournament"):
        make_method("rea", ToySpace(), {"search": {}}, make_rng(0))
    with pytest.raises(ValueError, match="tournament"):
        make("rea", population=3, tournament=5)


def test_random_never_repeats():
    method = make("random")
    run(method, 300, batch=7)
    archs = [a for a, _ in method.history]
    assert len(set(archs)) == 300
    assert all(isinstance(x, int) for x in archs[0])


def test_ask_tell_best():
    method = make("random")
    with pytest.raises(RuntimeError):
        method.best()
    run(method, 20)
    arch, metrics = method.best()
    accs = [m["acc"] for _, m in method.history]
    assert metrics["acc"] == max(accs)
    assert method.history[method.best_index()][0] == arch
    assert accs.index(max(accs)) == method.best_index()  # the earliest on ties
    with pytest.raises(ValueError, match="acc"):
        method.tell([arch], [{"loss": 1.0}])
    with pytest.raises(ValueError):
        method.tell([arch], [])


def test_rea_population_ages():
    method = make("rea")
    run(method, 10, batch=4)  # warm-up: random, all distinct
    assert len({a for a, _ in method.history}) == 10
    for _ in range(6):
        run(method, len(method.history) + 3, batch=3)
        assert len(method.population) == REA["population"]
        assert method.population == method.history[-REA["population"] :]  # the oldest died


def test_rea_child_is_the_first_mutant_of_the_tournament_winner_even_if_seen():
    """Textbook REA: `tournament` members drawn with replacement, one mutation of the best, and that
    child is proposed as is, repeat or not (no redraws), so each child costs one tournament."""
    space = ToySpace()
    method = make("rea", seed=1, population=6, tournament=3)
    run(method, 6)
    repeats = 0
    for _ in range(60):
        population = method.population
        replay = np.random.Generator(type(method.rng.bit_generator)())
        replay.bit_generator.state = method.rng.bit_generator.state
        picks = replay.integers(len(population), size=3)
        winner = population[max(picks, key=lambda i: population[i][1]["acc"])][0]
        (child,) = method.ask(1)
        assert child == space.mutate(winner, replay)
        assert method.rng.bit_generator.state == replay.bit_generator.state  # nothing drawn beyond that
        repeats += child in method.seen
        method.tell([child], [score(child)])
    assert repeats > 0  # some children were repeats, kept as they came
    # a batched ask: n tournaments on the same population, each child one mutation from a member
    method = make("rea", seed=2)
    run(method, 10)
    population = [a for a, _ in method.population]
    for child in method.ask(5):
        assert min(sum(c != p for c, p in zip(child, parent)) for parent in population) == 1


def test_rea_repeat_joins_the_population_and_an_aged_out_arch_can_return():
    """A repeated child is told again (free where the evaluator caches): it is appended as the
    youngest member and the oldest dies, and an arch that aged out may come back as a child."""
    method = make("rea", seed=0, population=10, tournament=3)
    cache: dict = {}
    while len(cache) < 150:
        (child,) = method.ask(1)
        before = list(method.population)
        metrics = cache.setdefault(child, score(child))
        method.tell([child], [metrics])
        if len(before) == 10:  # the oldest died, the child (repeat or not) is the youngest
            assert method.population == before[1:] + [(child, metrics)]
    archs = [a for a, _ in method.history]
    assert len(archs) > len(set(archs)) == 150  # repeats were kept in the population
    assert method.queries_to(len(archs) - 1) == 150 and method.queries_to(9) == 10
    last: dict = {}
    returned = 0
    for i, arch in enumerate(archs):
        returned += arch in last and i - last[arch] > 10  # gone from the 10 living members, then back
        last[arch] = i
    assert returned > 0


def test_rea_beats_random_on_average():
    seeds = range(10)
    rea = [queries_to_optimum(make("rea", seed=s)) for s in seeds]
    rnd = [queries_to_optimum(make("random", seed=s)) for s in seeds]
    assert np.mean(rea) < 0.5 * np.mean(rnd), (rea, rnd)


@pytest.mark.parametrize("name", ["random", "rea"])
def test_state_round_trip_resumes_exactly(name):
    straight = make(name, seed=3)
    run(straight, 40)

    first = make(name, seed=3)
    run(first, 20)
    state = json.loads(json.dumps(first.state_dict()))
    resumed = make(name, seed=99)  # another rng: the state must overwrite it
    resumed.load_state_dict(state)
    run(resumed, 40)
    assert resumed.history == straight.history
    assert resumed.best() == straight.best()


def test_load_state_refuses_other_method_or_knobs():
    state = make("rea").state_dict()
    with pytest.raises(ValueError, match="method"):
        make("random").load_state_dict(state)
    with pytest.raises(ValueError, match="config"):
        make("rea", population=12, tournament=3).load_state_dict(state)
