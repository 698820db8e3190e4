"""Stage `evolve_space` (one NSE round) on a tiny space and tiny random data."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from nasstudy.evolution.nse_front import FrontRow, pareto_mask, prev_front_bits, sample_band_archs, update_state
from nasstudy.evolution.nse_supernet import CostModel, NSEConfig, drop_candidates, nse_round
from nasstudy.spaces.mobile import MobileSpace, initial_state
from nasstudy.stages import evolve_space
from nasstudy.tracking import MemoryTracker
from nasstudy.training import load_cls, make_generator

# Not conftest's `tiny_mobile` on purpose: k = 3 of 6 ops (a queue for NSE to add from), and half the
# channels and image size to keep a round fast.
SPACE_CFG = {
    "name": "mobile",
    "stem_channels": 4,
    "stages": [{"channels": 4, "positions": 1, "stride": 1}, {"channels": 8, "positions": 2, "stride": 2}],
    "head_channels": 8,
    "pool": ["mb3_e1", "mb3_e3", "mb5_e1", "mb5_e3", "mb3_e1_d2", "mb3_e3_d2"],
    "k": 3,
    "image_size": 8,
    "num_classes": 3,
}
SUPERNET = {"batch_size": 16, "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0, "bn_recal_batches": 1}
NSE = {
    "epochs": 2,
    "branch_prob": 0.5,
    "arch_step_every": 1,
    "alpha_lr": 0.05,
    "alpha_init": 0.0,
    "flops_target": 3.0e4,
    "flops_lambda": 1.0e-10,
    "drop_threshold": -0.05,
    "front_samples": 6,
    "lower_band_samples": 2,
    "flops_band": 0.3,
}
OUTPUTS = ("space_state", "front", "op_stats", "supernet", "metrics")


def _params(**nse) -> dict:
    return {
        "seed": 0,
        "study": "test",
        "device": "cpu",
        "threads": 1,
        "space": SPACE_CFG,
        "supernet": SUPERNET,
        "evolution": {"nse": {**NSE, **nse}},
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for split, n in (("train", 80), ("val", 32)):
        labels = np.arange(n, dtype=np.int64) % 3
        images = rng.integers(0, 60, size=(n, 8, 8, 3)).astype(np.uint8)
        images[..., labels % 3] += 150  # a learnable colour cue per class
        np.savez(root / f"cls_{split}.npz", images=images, labels=labels)
    (root / "gen0.json").write_text(json.dumps(initial_state(SPACE_CFG)))
    return root


def _run(data, out, state_path, gen=1, **nse):
    outputs = {k: out / f"{k}.out" for k in OUTPUTS}
    inputs = {"cls_train": data / "cls_train.npz", "cls_val": data / "cls_val.npz", "space_state": state_path}
    evolve_space.run(inputs, outputs, _params(**nse), {"method": "nse", "gen": str(gen)}, MemoryTracker())
    return outputs


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_stage_writes_outputs_and_evolves_state(data, tmp_path):
    old = json.loads((data / "gen0.json").read_text())
    outputs = _run(data, tmp_path, data / "gen0.json")
    for key in OUTPUTS:
        assert outputs[key].stat().st_size > 0
    new = json.loads(outputs["space_state"].read_text())
    stats = _csv(outputs["op_stats"])
    assert list(stats[0]) == ["position", "op", "alpha", "prob", "front_count", "status"]
    for i, (o, n) in enumerate(zip(old["positions"], new["positions"])):
        assert len(n["active"]) == SPACE_CFG["k"]
        added = [s["op"] for s in stats if int(s["position"]) == i and s["status"] == "added"]
        kept = [s["op"] for s in stats if int(s["position"]) == i and s["status"] == "kept"]
        assert set(kept) <= set(o["active"])
        assert added == o["queue"][: len(added)]  # from the queue front, in queue order
        assert n["active"] == kept + added
        assert n["queue"] == o["queue"][len(added) :]
        assert n["protected"] == kept == sorted({op for a in new["front"] for op in a[i]}, key=o["active"].index)
    front = _csv(outputs["front"])
    assert list(front[0]) == ["arch", "flops", "params", "acc", "on_front"]
    assert any(r["on_front"] == "1" for r in front)
    metrics = json.loads(outputs["metrics"].read_text())
    assert metrics["front_size"] == sum(r["on_front"] == "1" for r in front)
    assert len(metrics["train_loss"]) == NSE["epochs"]

    # Generation 2 starts from generation 1: every arch on generation 1's front is scored again.
    out2 = tmp_path / "gen2"
    out2.mkdir()
    outputs2 = _run(data, out2, outputs["space_state"], gen=2)
    space = MobileSpace(SPACE_CFG, new)
    prev = {space.to_string(space.from_ops([tuple(ops) for ops in arch])) for arch in new["front"]}
    assert len(prev) == metrics["front_size"] and prev <= {r["arch"] for r in _csv(outputs2["front"])}


def test_two_runs_give_identical_bytes(data, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    out_a, out_b = _run(data, a, data / "gen0.json"), _run(data, b, data / "gen0.json")
    for key in ("metrics", "front", "op_stats", "space_state"):
        assert out_a[key].read_bytes() == out_b[key].read_bytes(), key


def test_unknown_method_is_an_error(data, tmp_path):
    with pytest.raises(ValueError, match="unknown evolution method"):
        evolve_space.run({}, {}, _params(), {"method": "darwin", "gen": "1"}, MemoryTracker())


def test_alpha_drop_honours_protection():
    active = [["a", "b", "c"], ["d", "e"]]
    alive = np.ones((2, 3), dtype=bool)
    alive[1, 2] = False
    alpha = torch.tensor([[-1.0, -1.0, 0.5], [-2.0, 0.0, -9.0]])
    drops: dict = {}
    drop_candidates(alpha, alive, active, [{"b"}, set()], -0.5, drops, step=7)
    assert alive.tolist() == [[False, True, True], [False, True, False]]
    assert drops == {(0, 0): 7.0, (1, 0): 7.0}


def test_flops_term_lowers_inclusion_probability(data):
    state = initial_state(SPACE_CFG)
    cfg = NSEConfig(**{**NSE, "flops_target": 1.0, "flops_lambda": 1.0, "drop_threshold": -100.0, "epochs": 3})
    train, val = load_cls(data / "cls_train.npz"), load_cls(data / "cls_val.npz")
    torch.manual_seed(0)
    result = nse_round(
        state, SPACE_CFG, train, val, cfg, SUPERNET, np.random.default_rng(0), make_generator(0, "t"), MemoryTracker()
    )
    probs = [e["mean_alpha_prob"] for e in result.epochs]
    flops = [e["expected_flops"] for e in result.epochs]
    assert probs[0] < 0.5 and probs[-1] < probs[0]
    assert flops[-1] < flops[0]
    assert result.summary["alpha_dropped"] == 0


def test_band_sampling_and_front():
    cfg = NSEConfig(flops_target=10.0, flops_band=0.3, front_samples=3, lower_band_samples=2)
    cost = np.array([[1.0, 2.0, 4.0], [3.0, 5.0, 8.0]])

    def flops(bits):
        return (bits * cost).sum((-1, -2))

    picks = sample_band_archs(np.full((2, 3), 0.5), flops, cfg, np.random.default_rng(0))
    keys = [b.tobytes() for b, _, _ in picks]
    assert len(keys) == len(set(keys)) == 5
    for bits, band, in_band in picks:
        f = flops(bits)
        assert not in_band or (7 <= f <= 13 if band == "near" else 4 <= f < 7)

    def row(f, a, band="near"):
        return FrontRow(f"{f}-{a}", f, 0, a, band, [])

    rows = [row(10, 50.0), row(12, 60.0), row(11, 55.0), row(13, 58.0), row(5, 56.0, "lower")]
    # (10, 50) and (11, 55) are dominated by the cheaper lower-band arch; it never joins the front.
    assert pareto_mask(rows) == [False, True, False, False, False]
    assert pareto_mask([row(10, 50.0), row(5, 60.0, "lower")]) == [True, False]  # fallback: best other


def test_cost_model_matches_space_flops():
    space = MobileSpace(SPACE_CFG, initial_state(SPACE_CFG))
    costs = CostModel(SPACE_CFG, space, SPACE_CFG["k"])
    rng = np.random.default_rng(0)
    for _ in range(20):
        arch = space.sample(rng)
        bits = np.asarray(arch, dtype=bool).reshape(space.num_positions, SPACE_CFG["k"])
        assert costs.flops(bits) == space.flops(arch)
    p = torch.full((space.num_positions, SPACE_CFG["k"]), 0.5)
    mean = np.mean([space.flops(a) for a in _all_archs(space)])
    assert float(costs.expected(p)) == pytest.approx(mean, rel=1e-5)


def _all_archs(space):
    n = len(space.decision_sizes)
    return [tuple((m >> np.arange(n)) & 1) for m in range(2**n)]


def test_autospace_generations_through_the_stage(data, tmp_path):
    """AutoSpace as the stage's second method: two generations chained through space_state.json, the
    reference op kept at every position, the learned state usable as a search space, reruns identical."""
    params = {**_params(), "evolution": {"autospace": {"epochs": 1, "population": 4, "n_mutants": 1}}}
    inputs = {"cls_train": data / "cls_train.npz", "cls_val": data / "cls_val.npz", "space_state": data / "gen0.json"}
    runs = []
    for folder in ("a", "b"):
        state_path = inputs["space_state"]
        for gen in (1, 2):
            outputs = {k: tmp_path / folder / f"gen{gen}" / f"{k}.out" for k in OUTPUTS}
            evolve_space.run({**inputs, "space_state": state_path}, outputs, params,
                             {"method": "autospace", "gen": str(gen)}, MemoryTracker())  # fmt: skip
            state_path = outputs["space_state"]
        runs.append(outputs)
    state = json.loads(runs[0]["space_state"].read_text())
    first = [p["active"][0] for p in initial_state(SPACE_CFG)["positions"]]
    assert [p["reference"] for p in state["positions"]] == first
    assert all(p["reference"] in p["active"] for p in state["positions"])
    MobileSpace(SPACE_CFG, state).sample(np.random.default_rng(0))
    stats = _csv(runs[0]["op_stats"])
    assert {"position", "op", "fitness", "status"} <= set(stats[0]) and any(r["status"] == "reference" for r in stats)
    assert [r["on_front"] for r in _csv(runs[0]["front"])] == ["0", "0"]
    for key in ("space_state", "front", "op_stats", "metrics"):
        assert runs[0][key].read_bytes() == runs[1][key].read_bytes(), key


def _two_arch_front() -> tuple[dict, list[list[tuple[str, ...]]]]:
    """A state after a round whose front held two archs using different ops (the best one and a
    cheaper one), built by `update_state` from scored rows."""
    state = initial_state(SPACE_CFG)
    a, b, c = SPACE_CFG["pool"][:3]
    best, cheap = [(a,), (a, b), (b,)], [(c,), (), (a,)]
    rows = [FrontRow("best", 900, 0, 60.0, "near", best), FrontRow("cheap", 500, 0, 50.0, "near", cheap),
            FrontRow("dominated", 950, 0, 40.0, "near", [(b,), (c,), (c,)])]  # fmt: skip
    for r, on in zip(rows, pareto_mask(rows)):
        r.on_front = on
    new, _, top = update_state(state, rows, np.zeros((3, 3)), SPACE_CFG["k"], 0.0)
    assert top.arch == "best"
    return new, [best, cheap]


def _round(data, state, **nse):
    cfg = NSEConfig(**{**NSE, "epochs": 1, **nse})
    train, val = load_cls(data / "cls_train.npz"), load_cls(data / "cls_val.npz")
    rng, batches = np.random.default_rng(0), make_generator(0, "t")
    return nse_round(state, SPACE_CFG, train, val, cfg, SUPERNET, rng, batches, MemoryTracker())


def test_ops_of_every_front_arch_are_protected_from_dropping(data):
    """NSE's prev_best is the union of the ops of all last-front archs, not the best arch's alone:
    with a threshold every α falls below, exactly those ops stay alive through the round."""
    state, front = _two_arch_front()
    union = [{op for arch in front for op in arch[i]} for i in range(3)]
    assert state["front"] == [[list(ops) for ops in arch] for arch in front]
    assert [set(p["protected"]) for p in state["positions"]] == union
    result = _round(data, state, drop_threshold=100.0)
    for i, pos in enumerate(state["positions"]):
        alive = {op for j, op in enumerate(pos["active"]) if result.alive[i, j]}
        assert alive == union[i], f"position {i}"


def test_previous_front_archs_are_scored_again_and_join_the_front(data):
    state, front = _two_arch_front()
    result = _round(data, state, drop_threshold=-100.0)
    scored = {tuple(map(tuple, r.ops)) for r in result.front}
    for arch in front:
        assert tuple(arch) in scored, f"last front's arch {arch} was not scored again"
    prev = [r for r in result.front if r.band == "prev_front"]
    assert 1 <= len(prev) <= 2 and result.summary["prev_front_scored"] == len(prev)
    # The next front is taken over the new draws and the old front together; its archs are the state's.
    assert result.state["front"] == [[list(ops) for ops in r.ops] for r in result.front if r.on_front]


def test_a_front_arch_with_an_inactive_op_is_a_clear_error():
    state, _ = _two_arch_front()
    state["front"][0][1] = ["mb3_e3_d2"]
    active = [p["active"] for p in state["positions"]]
    with pytest.raises(ValueError, match="op 'mb3_e3_d2' at position 1 is not active"):
        prev_front_bits(state, active, (3, 3), [])
