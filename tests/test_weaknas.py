"""WeakNAS on the toy space (and, when the table is here, on NAS-Bench-201): top-M sampling from the
predictor's ranking, z-scored labels, no repeats, exact resume, the predictor's top-1."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.toy_space import OPTIMUM, ToySpace, score

from nasstudy.methods import weaknas
from nasstudy.methods.weaknas import MlpRegime, WeakNAS, fit_predictor, make_mlp, train_mlp, zscore
from nasstudy.utils import make_rng

torch.set_num_threads(1)

# small and fast: the toy space has 729 archs
KNOBS = {"initial": 10, "batch": 5, "top_m": 20, "mlp_layers": 2, "mlp_width": 32, "mlp_epochs": 30, "mlp_lr": 0.01}
REGIME = MlpRegime(layers=2, width=32, epochs=30, lr=0.01)
NB201_TABLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201" / "nb201_cifar10.csv"


class EnumToySpace(ToySpace):
    """The toy space plus `enumerate()`, like NB201: WeakNAS then ranks the whole space."""

    def enumerate(self) -> list[tuple[int, ...]]:
        return [tuple(a) for a in itertools.product(*(range(s) for s in self.decision_sizes))]


def make(seed: int = 0, space=None, **knobs) -> WeakNAS:
    return WeakNAS(space or EnumToySpace(), make_rng(seed, "test", "weaknas"), **{**KNOBS, **knobs})


def run(method: WeakNAS, queries: int, batch: int = 5) -> None:
    while len(method.history) < queries:
        archs = method.ask(min(batch, queries - len(method.history)))
        method.tell(archs, [score(a) for a in archs])


def test_knobs_are_checked():
    with pytest.raises(ValueError, match="predictor"):
        make(predictor="svm")
    with pytest.raises(ValueError, match="top_m"):
        make(top_m=0)
    with pytest.raises(ValueError, match="mlp_l2=-1"):
        make(mlp_l2=-1)


def test_mlp_trains_in_minibatches_for_the_set_epochs_with_l2():
    """The authors' regime (sklearn MLPRegressor): shuffled minibatches of `batch` (the last one
    smaller) for `epochs` passes, and an L2 penalty that shrinks the weights."""
    rng = np.random.default_rng(0)
    x, y = rng.random((450, 12)).astype(np.float32), rng.normal(size=450)
    sizes = []
    hook = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda module, args: sizes.append(len(args[0])) if getattr(module, "in_features", None) == 12 else None
    )
    try:
        train_mlp(x, y, seed=0, regime=MlpRegime(layers=2, width=16, epochs=3, batch=200, tol=0.0))
    finally:
        hook.remove()
    assert sizes == [200, 200, 50] * 3  # 3 epochs of 3 minibatches, one forward each

    def weight_norm(l2: float) -> float:
        net = train_mlp(x, y, seed=0, regime=MlpRegime(layers=2, width=16, epochs=20, lr=0.01, l2=l2))
        return sum(float((m.weight.detach() ** 2).sum()) for m in net if isinstance(m, torch.nn.Linear))

    assert weight_norm(1e4) < 0.5 * weight_norm(0.0)  # L2 shrinks the weights
    assert MlpRegime() == MlpRegime(layers=4, width=1000, epochs=100, lr=1e-3, batch=200, l2=1e-4, tol=1e-4,
                                    patience=10)  # the paper's (sklearn's defaults)  # fmt: skip
    method = make(mlp_batch=64, mlp_l2=1e-3)
    assert (method.regime.batch, method.regime.l2) == (64, 1e-3)
    assert WeakNAS(EnumToySpace(), make_rng(0)).config()["mlp_lr"] == 1e-3  # the authors' Adam lr by default


def test_mlp_stops_when_its_loss_stops_improving_as_sklearn_does():
    """sklearn's MLPRegressor (the authors' predictor) ends a fit once the epoch loss has not beaten
    its best by `tol` for more than n_iter_no_change (10) epochs; tol 0 runs every epoch."""
    rng = np.random.default_rng(0)
    x, y = rng.random((100, 6)).astype(np.float32), rng.normal(size=100)
    epochs = []
    hook = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda module, args: epochs.append(1) if getattr(module, "in_features", None) == 6 else None
    )
    try:
        train_mlp(x, y, seed=0, regime=MlpRegime(layers=1, width=4, epochs=200, lr=1e-6, tol=1e-2))
        stopped = len(epochs)
        epochs.clear()
        train_mlp(x, y, seed=0, regime=MlpRegime(layers=1, width=4, epochs=200, lr=1e-6, tol=0.0))
    finally:
        hook.remove()
    assert stopped == 12 and len(epochs) == 200  # lr 1e-6 barely moves: the first epoch sets the best, 11 stale stop


def test_proposals_come_from_the_predicted_top_m_of_a_fit_on_all_samples():
    method = make(seed=1)
    assert method.predicted_best() is None and method.ranking() == []
    run(method, 10)  # the initial uniform samples: now the first fit
    cands = method.candidates()
    x = np.stack([EnumToySpace().encode(a) for a in cands])
    uniform_picks = 0
    for _ in range(8):
        assert method.fit_size == len(method.history)  # fit on every sample so far
        # the ranking is the predictor's: refit it independently from the history and the seed
        y = zscore([m["acc"] for _, m in method.history])
        hx = np.stack([EnumToySpace().encode(a) for a, _ in method.history])
        scores = fit_predictor("mlp", hx, y, method.fit_seed, REGIME, 100)(x)
        assert method.ranking() == [cands[i] for i in np.argsort(-scores, kind="stable")]
        assert method.predicted_best() == cands[int(np.argmax(scores))]
        top = [a for a in method.ranking()[: KNOBS["top_m"]] if a not in method.seen]
        archs = method.ask(KNOBS["batch"])
        assert len(set(archs)) == len(archs) and not set(archs) & method.seen
        if len(top) >= len(archs):
            assert set(archs) <= set(top)
            uniform_picks += 1
        else:  # fewer than asked left in the top-M: the best-ranked unqueried archs
            assert archs == [a for a in method.ranking() if a not in method.seen][: len(archs)]
        method.tell(archs, [score(a) for a in archs])
    assert uniform_picks >= 3


def test_labels_are_z_scored(monkeypatch):
    seen_labels = []

    def spy(kind, x, y, *args):
        seen_labels.append(np.asarray(y))
        assert len(x) == len(y)
        return fit_predictor(kind, x, y, *args)

    monkeypatch.setattr(weaknas, "fit_predictor", spy)
    method = make(seed=2)
    run(method, 40)
    assert [len(y) for y in seen_labels] == [10, 15, 20, 25, 30, 35, 40]  # a refit each `batch` tells
    for y in seen_labels:
        assert abs(y.mean()) < 1e-9 and abs(y.std() - 1) < 1e-9
    assert np.array_equal(zscore([3.0, 3.0]), [0.0, 0.0])  # constant labels: no division by zero


def test_never_repeats_even_when_top_m_runs_out():
    # top_m < batch: each round first empties the top-M, then takes the best-ranked unqueried archs
    method = make(seed=3, top_m=3, batch=10, mlp_epochs=5)
    run(method, 729, batch=10)  # the whole space
    archs = [a for a, _ in method.history]
    assert len(set(archs)) == 729 and all(isinstance(v, int) for v in archs[0])


def test_finds_the_toy_optimum_fast_and_predicted_best_is_a_candidate():
    found = []
    for seed in range(3):
        method = make(seed=seed)
        run(method, KNOBS["initial"])
        while OPTIMUM not in method.seen and len(method.history) < 729:
            run(method, len(method.history) + 5)
            assert method.predicted_best() in set(method.candidates())
        found.append(len(method.history))
    assert np.mean(found) < 150, found  # random search expects (729 + 1) / 2 = 365


@pytest.mark.parametrize("space", [EnumToySpace, ToySpace], ids=["enumerated", "pool"])
@pytest.mark.parametrize("predictor", ["mlp", "gbdt", "rf"])
def test_state_round_trip_resumes_exactly(space, predictor):
    knobs = {"predictor": predictor, "trees": 10, "candidates": 300}
    straight = make(5, space(), **knobs)
    run(straight, 23)
    run(straight, 45)

    first = make(5, space(), **knobs)
    run(first, 23)  # between rounds: the resumed method refits the latest fit on 20 archs
    state = json.loads(json.dumps(first.state_dict()))
    resumed = make(99, space(), **knobs)  # another rng and pool seed: the state must overwrite both
    resumed.load_state_dict(state)
    assert resumed.candidates() == first.candidates()
    assert resumed.ranking() == first.ranking() and resumed.predicted_best() == first.predicted_best()
    run(resumed, 45)
    assert resumed.history == straight.history
    assert resumed.predicted_best() == straight.predicted_best()


def test_pool_for_a_space_without_enumerate_is_fixed_by_the_seed():
    a, b, c = (make(seed, ToySpace(), candidates=200) for seed in (7, 7, 8))
    assert len(a.candidates()) == 200 == len(set(a.candidates()))
    assert a.candidates() == b.candidates() != c.candidates()
    run(a, 30)
    assert set(a.ranking()) == set(a.candidates()) and a.predicted_best() in set(a.candidates())
    # a pool asked for more than the space holds stops at the space
    assert len(make(7, ToySpace(), candidates=10_000).candidates()) == 729


@pytest.mark.slow  # up to a minute: the predictor is refit up to 80 times
@pytest.mark.skipif(not NB201_TABLE.is_file(), reason=f"no NB201 table at {NB201_TABLE}")
def test_nb201_finds_the_best_valid_arch_in_few_queries():
    nb201 = pytest.importorskip("nasstudy.spaces.nb201")
    from nasstudy.evaluators import TableEvaluator

    space = nb201.Nb201Space({})
    table = TableEvaluator(NB201_TABLE, space, "cifar10_valid_acc")
    best_string = max(table.rows, key=lambda s: float(table.rows[s]["cifar10_valid_acc"]))
    best = space.from_string(best_string)
    queries = []
    for seed in range(4):
        method = WeakNAS(space, make_rng(seed, "nb201", "weaknas"))  # the paper's NB201 setting
        while best not in method.seen and len(method.history) < 400:
            archs = method.ask(10)
            method.tell(archs, [table.evaluate(a) for a in archs])
        queries.append(len(method.history) if best in method.seen else None)
    # random search finds it within 400 queries with probability 400 / 15,625 = 2.6%
    assert sum(q is not None for q in queries) >= 3, queries


def test_mlp_starts_from_sklearns_glorot_init_not_torchs_default():
    """sklearn's MLPRegressor draws weights and biases uniformly in +-sqrt(6 / (fan_in + fan_out));
    torch's Linear default (+-1/sqrt(fan_in)) starts the 2x64 net too small for 100 Adam steps."""
    net = make_mlp(30, seed=0, regime=MlpRegime(layers=2, width=64))
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(30, 64), (64, 64), (64, 1)]
    for m in linears:
        glorot = math.sqrt(6.0 / (m.in_features + m.out_features))
        for p in (m.weight, m.bias):
            assert float(p.detach().abs().max()) <= glorot
            if p.numel() >= 64:
                assert float(p.detach().abs().max()) > 0.9 * glorot  # spread over the whole range
    hidden = linears[1]  # 64 -> 64: torch's bound would be 1/8 = 0.125, Glorot's 0.217
    assert float(hidden.weight.abs().max()) > 1.5 / math.sqrt(64)
    assert torch.equal(make_mlp(30, 0, MlpRegime(2, 64))[0].weight, linears[0].weight)  # seeded
