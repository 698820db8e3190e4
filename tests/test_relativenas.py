"""RelativeNAS on the toy space (pairing, the slow learner's move, resume, queries to the optimum)
and its joint learning on a tiny mobile supernet (which copy each op's weights come from)."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from helpers.toy_space import OPTIMUM, ToySpace, score

from nasstudy.joint_training import cosine_lr, merge_pair_weights, train_on_path, train_pair_on_supernet
from nasstudy.methods import method_knobs
from nasstudy.methods.random_search import RandomSearch
from nasstudy.methods.relativenas import RelativeNAS, decode_vector, fast_index, relative_update
from nasstudy.spaces.mobile import MobileSpace, Supernet, initial_state
from nasstudy.training import ClsData
from nasstudy.utils import make_rng

SIZES = ToySpace().decision_sizes


def make(seed: int = 0, population: int = 6, **knobs) -> RelativeNAS:
    return RelativeNAS(ToySpace(), make_rng(seed, "test", "relativenas"), population=population, **knobs)


def run(method, queries: int, batch: int) -> None:
    while len(method.history) < queries:
        archs = method.ask(min(batch, queries - len(method.history)))
        method.tell(archs, [score(a) for a in archs])


def test_knobs_and_errors():
    assert method_knobs(RelativeNAS) == ["population", "compare"]
    assert make(population=20).config() == {"population": 20, "compare": "acc"}  # the search metric by default
    with pytest.raises(ValueError, match="even"):
        make(population=5)
    with pytest.raises(ValueError, match="compare"):
        make(compare="flops")


def test_decode_is_floor_then_clip():
    assert decode_vector(np.array([0.0, 0.999, 1.0, 2.999999, 7.5, -0.5]), SIZES) == (0, 0, 1, 2, 2, 0)
    method = make(population=20)
    assert ((method.x >= 0) & (method.x < np.asarray(SIZES))).all()  # uniform in [0, size) at start
    assert (method.v == 0).all()
    archs = method.ask(20)
    assert archs == [decode_vector(method.x[m], SIZES) for m in method.order]  # the epoch, pair by pair


def test_update_rule_matches_formula():
    x_slow, v_slow = np.array([0.5, 2.5, 1.0]), np.array([0.2, -0.4, 1.0])
    x_fast = np.array([2.9, 0.1, 1.0])
    r1, r2 = np.array([0.5, 0.25, 1.0]), np.array([1.0, 0.5, 0.5])
    x, v = relative_update(x_slow, v_slow, x_fast, r1, r2, [3, 3, 3])
    # v = r1*v + r2*(x_fast - x_slow); x = clip(x_slow + v, 0, size - 1e-6)
    np.testing.assert_allclose(v, [0.1 + 2.4, -0.1 - 1.2, 1.0])
    np.testing.assert_allclose(x, [3 - 1e-6, 1.2, 2.0])


def test_fast_learner_rule():
    assert fast_index({"acc": 50, "loss": 0.4}, {"acc": 90, "loss": 0.5}) == 1  # by acc (the search metric)
    assert fast_index({"acc": 50, "loss": 1.0}, {"acc": 90, "loss": 0.5}, compare="loss") == 1
    assert fast_index({"acc": 50, "loss": 0.4}, {"acc": 90, "loss": 0.5}, compare="loss") == 0  # lower loss
    assert fast_index({"acc": 50, "loss": math.nan}, {"acc": 90, "loss": 0.1}, compare="loss") == 1  # NaN: by acc
    assert fast_index({"acc": 95}, {"acc": 90, "loss": 0.1}, compare="loss") == 0  # missing loss: by acc
    assert fast_index({"acc": 90, "loss": 0.5}, {"acc": 90, "loss": 0.5}) == 0  # ties: the first
    # the method's default picks the fast learner by acc too: a pair where loss and acc disagree
    method = make(population=2)
    archs = method.ask(2)
    method.tell(archs, [{"acc": 50.0, "loss": 0.4}, {"acc": 90.0, "loss": 0.5}])
    assert not method.v[method.order[1]].any()  # the higher acc is the fast learner: it does not move
    assert method.v[method.order[0]].any()  # the lower acc (despite its lower loss) is the slow learner


def test_cosine_lr_is_the_papers_schedule():
    """CosineAnnealingLR(T_max=epochs, eta_min=lr_min) stepped once per epoch, from lr 0.1 to 0.001."""
    assert cosine_lr(0, 50, 0.1, 0.001) == pytest.approx(0.1)
    assert cosine_lr(25, 50, 0.1, 0.001) == pytest.approx(0.0505)
    assert cosine_lr(50, 50, 0.1, 0.001) == pytest.approx(0.001)
    net = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=50, eta_min=0.001)
    for epoch in range(50):
        assert cosine_lr(epoch, 50, 0.1, 0.001) == pytest.approx(opt.param_groups[0]["lr"]), epoch
        opt.step()
        sched.step()


def test_only_the_slow_learner_moves_by_the_formula():
    method = make(seed=1, population=8)
    run(method, 8, batch=8)  # epoch 0: some slow learners have a velocity now
    for _ in range(3):  # whole epochs: ask(population) at an epoch start gives the pairs in order
        x0, v0 = method.x.copy(), method.v.copy()
        archs = method.ask(8)
        order = list(method.order)
        rng = copy.deepcopy(method.rng)  # draws r1, r2 pair by pair when the results come in
        metrics = [score(a) for a in archs]
        method.tell(archs, metrics)
        for k in range(4):
            a, b = order[2 * k], order[2 * k + 1]
            fast, slow = (a, b) if metrics[2 * k]["loss"] <= metrics[2 * k + 1]["loss"] else (b, a)
            r1, r2 = rng.random(6), rng.random(6)
            v = r1 * v0[slow] + r2 * (x0[fast] - x0[slow])
            np.testing.assert_array_equal(method.v[slow], v)
            np.testing.assert_array_equal(method.x[slow], np.clip(x0[slow] + v, 0, np.asarray(SIZES) - 1e-6))
            np.testing.assert_array_equal(method.x[fast], x0[fast])  # the fast learner stays put
            np.testing.assert_array_equal(method.v[fast], v0[fast])


def test_a_pair_moves_once_both_members_are_told():
    method = make(seed=2, population=4)
    x0 = method.x.copy()
    archs = method.ask(4)
    method.tell(archs[:1], [score(archs[0])])
    np.testing.assert_array_equal(method.x, x0)  # half a pair: nothing moves
    method.tell(archs[1:3], [score(a) for a in archs[1:3]])
    moved = {int(i) for i in np.flatnonzero((method.x != x0).any(axis=1))}
    assert moved <= set(method.order[:2]) and len(moved) <= 1  # the first pair's slow learner at most
    with pytest.raises(ValueError, match="pending"):
        method.tell([archs[2]], [score(archs[2])])  # out of order
    method.tell(archs[3:], [score(archs[3])])


def test_unsettled_members_wait_and_too_large_asks_are_refused():
    method = make(seed=3, population=4)
    assert method.available() == 4
    with pytest.raises(RuntimeError, match="4 more"):
        method.ask(5)  # the next epoch needs this epoch's results
    assert method.epoch == -1 and not method.pending  # a refused ask changes nothing
    archs = method.ask(3)
    method.tell(archs, [score(a) for a in archs])
    # member 4 of epoch 0 is pending; its pair's two members cannot be asked in epoch 1 yet
    assert method.available() == 1 + 2
    archs = method.ask(3)
    last_pair = set(method.open_pairs["0:1"]["members"])
    assert not last_pair & set(method.asked)
    with pytest.raises(RuntimeError):
        method.ask(1)
    method.tell(archs, [score(a) for a in archs])
    # the 2 left of epoch 1, plus epoch 2's members that no open pair of epoch 1 holds
    free = method.available()
    assert free == 2 + 4 - sum(len(p["members"]) for k, p in method.open_pairs.items() if k.startswith("1:"))
    archs = method.ask(free)  # as many as it says, no more
    with pytest.raises(RuntimeError):
        method.ask(1)
    method.tell(archs, [score(a) for a in archs])


class CheckedRelativeNAS(RelativeNAS):
    """Checks that no member moves between being asked and its pair's resolution."""

    def _propose(self, n):
        out = super()._propose(n)
        self.last_asked = getattr(self, "last_asked", {})
        for p in self.pending[-n:]:
            member = self.open_pairs[p["pair"]]["members"][p["slot"]]
            self.last_asked[member] = tuple(p["arch"])
        return out

    def _resolve(self, pair):
        for m in pair["members"]:
            assert self.decode(m) == self.last_asked[m]
        super()._resolve(pair)


@pytest.mark.parametrize(("population", "batch"), [(8, 3), (10, 4), (20, 7), (6, 6)])
def test_ragged_batches_keep_pairs_consistent(population, batch):
    method = CheckedRelativeNAS(ToySpace(), make_rng(4, "ragged"), population=population)
    run(method, 12 * population, batch)
    assert method.epoch >= 10


@pytest.mark.parametrize("nan_loss", [False, True])
def test_state_round_trip_resumes_exactly(nan_loss):
    def metrics(a):
        m = score(a)
        return {**m, "loss": math.nan} if nan_loss else m

    def go(method, queries):
        while len(method.history) < queries:
            archs = method.ask(min(3, queries - len(method.history)))  # ragged: epochs of 8 cut mid-pair
            method.tell(archs, [metrics(a) for a in archs])

    straight = make(seed=5, population=8)
    go(straight, 60)
    first = make(seed=5, population=8)
    go(first, 27)  # mid-epoch, mid-pair
    state = json.loads(json.dumps(first.state_dict()))
    resumed = make(seed=99, population=8)  # another rng and start: the state must overwrite both
    resumed.load_state_dict(state)
    go(resumed, 60)
    assert json.dumps(resumed.history) == json.dumps(straight.history)  # NaN-safe equality
    np.testing.assert_array_equal(resumed.x, straight.x)
    np.testing.assert_array_equal(resumed.v, straight.v)
    assert resumed.best_index() == straight.best_index()
    with pytest.raises(ValueError, match="config"):
        make(population=10).load_state_dict(state)


def unique_queries_to_optimum(method, batch: int, max_history: int = 2000) -> int:
    """Distinct archs evaluated until the optimum is told (what a cached evaluator charges);
    never found within `max_history` evaluations counts as the whole space (729)."""
    seen: set = set()
    while len(method.history) < max_history:
        archs = method.ask(batch)
        method.tell(archs, [score(a) for a in archs])
        for a in archs:
            seen.add(a)
            if a == OPTIMUM:
                return len(seen)
    return 729


def test_finds_the_optimum_in_fewer_queries_than_random():
    seeds = range(10)
    rel = [unique_queries_to_optimum(make(seed=s, population=20), batch=10) for s in seeds]
    rnd = [unique_queries_to_optimum(RandomSearch(ToySpace(), make_rng(s, "test", "random")), batch=1) for s in seeds]
    print(f"relativenas {rel} mean {np.mean(rel):.1f}; random {rnd} mean {np.mean(rnd):.1f}")
    assert np.mean(rel) < 0.5 * np.mean(rnd), (rel, rnd)


# --- joint learning on a tiny supernet --------------------------------------------------------

# On `tiny_mobile`: position 0 keeps its shape (no proj), position 1 changes it (proj = the empty subset),
# position 2 keeps it
FAST_OPS = [("mb3_e1",), (), ("mb3_e1", "mb3_e3")]
SLOW_OPS = [("mb3_e3",), ("mb3_e1",), ("mb3_e1",)]
FROM_SLOW = ("positions.0.branches.mb3_e3.", "positions.1.branches.mb3_e1.")  # used by the slow learner only


def tiny_supernet(cfg: dict) -> tuple[Supernet, MobileSpace]:
    """A seeded supernet on `cfg` (conftest's `tiny_mobile`) and its space."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    state = initial_state(cfg)
    return Supernet(cfg, [p["active"] for p in state["positions"]]), MobileSpace(cfg, state)


def test_merge_takes_each_op_from_the_model_that_uses_it(tiny_mobile: dict) -> None:
    supernet, _ = tiny_supernet(tiny_mobile)
    fast, slow = copy.deepcopy(supernet), copy.deepcopy(supernet)
    with torch.no_grad():
        for net, value in ((supernet, 0), (fast, 1), (slow, 2)):
            for t in net.state_dict().values():
                t.fill_(value)
    merge_pair_weights(supernet, fast, FAST_OPS, slow, SLOW_OPS)
    state = supernet.state_dict()
    assert any(k.startswith("positions.1.proj.") for k in state)
    for key, t in state.items():
        want = 2 if key.startswith(FROM_SLOW) else 1  # shared ops, proj, stem, head: the fast learner's
        assert (t == want).all(), key


def test_train_pair_merges_the_trained_copies(tiny_mobile: dict) -> None:
    supernet, space = tiny_supernet(tiny_mobile)
    g = torch.Generator().manual_seed(0)
    train = ClsData(torch.randn(32, 3, 16, 16, generator=g), torch.randint(0, 3, (32,), generator=g))
    val = ClsData(torch.randn(24, 3, 16, 16, generator=g), torch.randint(0, 3, (24,), generator=g))
    arch_a, arch_b = space.from_ops(SLOW_OPS), space.from_ops(FAST_OPS)
    before = copy.deepcopy(supernet)

    def make_optimizer(net):
        return torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4)

    kw = {"steps": 3, "batch_size": 8}
    result = train_pair_on_supernet(
        supernet, space, arch_a, arch_b, train, val, make_optimizer, torch.Generator().manual_seed(1), **kw
    )
    ma, mb = result.metrics
    assert result.fast == fast_index(ma, mb)
    assert ma["flops"] == space.flops(arch_a) and 0 <= mb["acc"] <= 100 and ma["loss"] > 0

    # the same training again, by hand: a then b from the same start, one generator
    g = torch.Generator().manual_seed(1)
    nets = [train_on_path(before, space.ops(arch), train, make_optimizer, g, **kw)[0] for arch in (arch_a, arch_b)]
    ops = [space.ops(arch_a), space.ops(arch_b)]
    fast, slow = nets[result.fast].state_dict(), nets[1 - result.fast].state_dict()
    fast_ops, slow_ops = ops[result.fast], ops[1 - result.fast]
    only_slow = {(i, op) for i in range(3) for op in slow_ops[i] if op not in fast_ops[i]}
    only_slow |= {(i, "") for i in range(3) if not slow_ops[i] and fast_ops[i]}
    assert only_slow  # the test means something either way round
    changed = 0
    for key, t in supernet.state_dict().items():
        parts = key.split(".")
        owner = None
        if parts[0] == "positions" and parts[2] in ("branches", "proj"):
            owner = (int(parts[1]), parts[3] if parts[2] == "branches" else "")
        source = slow if owner in only_slow else fast
        assert torch.equal(t, source[key]), key
        if owner in only_slow and t.is_floating_point():
            changed += int(not torch.equal(t, before.state_dict()[key]))
    assert changed > 0  # the slow learner's own ops were trained, and kept
