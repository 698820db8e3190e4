"""GA-NAS on the toy space: the paper's mechanisms (pairwise relativistic discriminator, generator
conditioned on a truth arch, PPO's clipped update by default), the generator learns the truth set,
proposals are new, resume is exact, and it beats random search; a short run on the real
NAS-Bench-201 table when it is there."""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers.toy_space import OPTIMUM, ToySpace, score

from nasstudy.methods.ganas import GANAS
from nasstudy.methods.random_search import RandomSearch
from nasstudy.utils import make_rng

NB201_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201" / "nb201_cifar10.csv"
SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "params.schema.yaml"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks: one thread is fastest and keeps runs bit-identical."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make(seed: int = 0, space=None, **knobs) -> GANAS:
    """The toy-space tests were sized for a 20-arch warm-up and a top-10 truth set (the study's
    default is smaller: 10 and 5 for a 30-query budget)."""
    knobs = {"initial": 20, "top_k": 10, **knobs}
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


def cross_log_prob(method) -> float:
    """Mean log p(t_i | t_(i+1)) over the truth set t: each truth arch given another as condition."""
    top = method.top()
    return float(method.log_prob(top, top[1:] + top[:1]).mean())


def test_generator_learns_the_top_k():
    for seed in range(3):
        method = make(seed)
        run(method, method.knobs["initial"])  # random warm-up, generator untrained
        start = cross_log_prob(method)
        assert start == pytest.approx(-6 * math.log(3), abs=0.5)  # about uniform
        trace = [start]
        for queries in (40, 60, 80):
            run(method, queries)
            trace.append(cross_log_prob(method))
        assert trace[-1] > start + 1.5, trace
        assert method.iterations >= 6


def codes(method, archs) -> torch.Tensor:
    return torch.stack([torch.as_tensor(method.space.encode(a)) for a in archs])


def test_discriminator_is_pairwise_and_relativistic():
    """D scores a pair (truth, other) by C(truth) - C(other): a pair of equal archs is a draw, the
    order flips the sign, and training on (truth, generated) pairs raises C(truth) - C(generated)."""
    method = make(5, gen_steps=0, disc_steps=30)  # train D only: G's samples stay those it had
    run(method, method.knobs["initial"])
    top = method.top()
    a, b = codes(method, top[:5]), codes(method, top[5:])
    with torch.no_grad():
        assert torch.equal(method.disc(a, a), torch.zeros(5))
        assert torch.allclose(method.disc(a, b), -method.disc(b, a))
        cond, fake = method._pairs(codes(method, top), 256, torch.Generator().manual_seed(0))
        fake = codes(method, [tuple(x) for x in fake.tolist()])
        before = method.disc(cond, fake).mean()
        loss_before = method.disc.loss(cond, fake)
    method.iteration(set(method.seen))
    with torch.no_grad():
        after = method.disc(cond, fake).mean()
        assert method.disc.loss(cond, fake) < loss_before
    assert after > before + 1.0 and after > 0, (before, after)


def test_generator_is_conditioned_on_a_truth_arch():
    """One generator maps truth arch A to A and B to B: its output distribution follows the
    condition, which an unconditional generator cannot do for both at once."""
    method = make(6, lr_gen=0.02, entropy=0.0)
    a, b = (0, 0, 0, 0, 0, 0), (2, 2, 2, 2, 2, 2)
    conds = codes(method, [a, b, a, b])
    archs = torch.tensor([a, b, b, a])
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])  # reward copying the condition
    for _ in range(30):
        method.policy_update(conds, archs, adv)
    lp = method.log_prob([a, b, b, a], [a, b, a, b])
    assert lp[0] > lp[3] + 3 and lp[1] > lp[2] + 3, lp  # log p(A|A) >> log p(A|B), same for B
    gen = torch.Generator().manual_seed(0)
    from_a = method.generator.sample(codes(method, [a] * 200), gen)
    from_b = method.generator.sample(codes(method, [b] * 200), gen)
    assert (from_a == 0).float().mean() > 0.8 and (from_b == 2).float().mean() > 0.8


def test_ppo_is_the_default_and_schema_defaults_match():
    assert make().knobs["policy"] == "ppo"
    schema = yaml.safe_load(SCHEMA.read_text())["properties"]["search"]["properties"]["ganas"]["properties"]
    signature = inspect.signature(GANAS.__init__).parameters
    knobs = [k for k in signature if k not in ("self", "space", "rng")]
    assert sorted(schema) == sorted(knobs)
    assert {k: schema[k]["default"] for k in knobs} == {k: signature[k].default for k in knobs}


def ppo_log_ratios(clip: float) -> list[float]:
    """log(new/old) of one pair before each of 30 PPO epochs on it with a huge advantage."""
    method = make(7, entropy=0.0, ppo_clip=clip, ppo_epochs=30, lr_gen=0.001)
    cond = codes(method, [(0, 1, 2, 0, 1, 2)] * 4)
    archs = torch.tensor([(2, 2, 1, 0, 0, 1)] * 4)
    ratios = method.policy_update(cond, archs, torch.full((4,), 1e6))
    return [float(r.log().max()) for r in ratios]


def test_ppo_clips_the_ratio():
    """Past 1 + clip a pair's gradient is gone: after Adam's momentum runs out the policy stops
    moving however large the advantage; unclipped it keeps climbing toward probability 1."""
    clipped, unclipped = ppo_log_ratios(0.2), ppo_log_ratios(1e9)
    assert clipped[0] == unclipped[0] == 0.0  # the first epoch is on the sampling policy
    assert clipped[-1] - clipped[-10] < 0.15, clipped  # stalled
    assert unclipped[-1] - unclipped[-10] > 1.0, unclipped  # still climbing
    assert clipped[-1] < 0.3 * unclipped[-1], (clipped, unclipped)


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


@pytest.mark.parametrize("knobs", [{}, {"policy": "reinforce"}, {"ppo_clip": 0.1, "ppo_epochs": 2}])
def test_state_round_trip_resumes_exactly(knobs):
    straight = make(3, **knobs)
    run(straight, 70, batch=3)

    first = make(3, **knobs)
    run(first, 36, batch=3)  # mid-iteration: some of the last batch not yet asked
    assert first.pending
    state = json.loads(json.dumps(first.state_dict()))
    resumed = make(99, **knobs)  # another rng and other initial weights: the state must overwrite both
    resumed.load_state_dict(state)
    again = make(98, **knobs)
    again.load_state_dict(state)
    assert again.ask(12) == first.ask(12)  # the very next proposals, across a new iteration
    run(resumed, 70, batch=3)
    assert resumed.history == straight.history
    assert resumed.best() == straight.best()
    top = straight.top()
    assert np.array_equal(resumed.log_prob(top, top), straight.log_prob(top, top))


def test_load_state_refuses_other_knobs():
    state = make().state_dict()
    with pytest.raises(ValueError, match="config"):
        make(top_k=5).load_state_dict(state)


def test_bad_knobs():
    with pytest.raises(ValueError, match="top_k"):
        make(top_k=0)
    with pytest.raises(ValueError, match="lr_gen"):
        make(lr_gen=0.0)
    with pytest.raises(ValueError, match="policy 'sgd' is not allowed; allowed: ppo, reinforce"):
        make(policy="sgd")
    with pytest.raises(ValueError, match="ppo_clip > 0"):
        make(ppo_clip=0.0)


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
