"""Stage `search` on a tiny supernet and tiny data; `TableEvaluator` on a small CSV."""

from __future__ import annotations

import base64
import csv
import io
import json
import math

import numpy as np
import pytest
import torch
from helpers.tiny_inputs import SPACE_CFG  # a constant, not conftest's fixture: params() needs it
from helpers.toy_space import ToySpace, score

from nasstudy import joint_training, training
from nasstudy.evaluators import TableEvaluator
from nasstudy.spaces.mobile import MobileSpace, Supernet, initial_state
from nasstudy.stages import search
from nasstudy.tracking import MemoryTracker
from nasstudy.training import save_model_file


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("inputs")
    torch.manual_seed(0)
    active = [p["active"] for p in initial_state(SPACE_CFG)["positions"]]
    save_model_file(Supernet(SPACE_CFG, active).to_model_file(), root / "supernet.pt")
    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("val", 48)):
        images = rng.integers(0, 256, size=(n, 16, 16, 3), dtype=np.uint8)
        np.savez(root / f"cls_{split}.npz", images=images, labels=rng.integers(0, 3, size=n))
    return {"cls_train": root / "cls_train.npz", "cls_val": root / "cls_val.npz", "supernet": root / "supernet.pt"}


def params(budget: int, method: str = "rea") -> dict:
    knobs = {
        "rea": {"population": 4, "tournament": 2},
        "random": {},
        "weaknas": {"initial": 4, "batch": 4, "top_m": 10, "candidates": 200},
        "ganas": {"initial": 4, "batch": 4, "top_k": 2},
        "relativenas": {
            "population": 4,
            "compare": "loss",
            "joint": {"steps": 2, "batch_size": 16, "lr": 0.05, "lr_min": 0.001, "momentum": 0.9, "weight_decay": 0.0},
        },
    }[method]
    return {
        "seed": 0,
        "study": "test",
        "device": "cpu",
        "threads": 1,
        "space": SPACE_CFG,
        "supernet": {"bn_recal_batches": 2, "batch_size": 16},
        "search": {"budget": budget, method: knobs},
    }


def run_search(inputs, out_dir, budget: int, method: str = "rea") -> tuple[dict, MemoryTracker]:
    outputs = {k: out_dir / f"{k}.{ext}" for k, ext in (("history", "csv"), ("best", "json"))}
    outputs |= {"state": out_dir / "state.json", "metrics": out_dir / "metrics.json"}
    tracker = MemoryTracker()
    search.run(inputs, outputs, params(budget, method), {"space": "initial", "method": method}, tracker)
    return outputs, tracker


def read_rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("method", ["random", "rea", "weaknas", "ganas", "relativenas"])
def test_outputs_agree(inputs, tmp_path, method):
    outputs, tracker = run_search(inputs, tmp_path, budget=12, method=method)
    rows = read_rows(outputs["history"])
    assert list(rows[0]) == search.HISTORY_COLUMNS
    assert [int(r["query"]) for r in rows] == list(range(1, 13))
    accs = [float(r["acc"]) for r in rows]
    assert [float(r["best_acc"]) for r in rows] == list(np.maximum.accumulate(accs))
    if method != "relativenas":  # joint learning re-scores a member as the shared weights move
        assert len({r["arch"] for r in rows}) == 12

    best = json.loads(outputs["best"].read_text())
    assert best["supernet_acc"] == max(accs)
    assert best["queries"] == 12 and best["queries_to_best"] == accs.index(max(accs)) + 1
    assert (best["space"], best["method"]) == ("initial", method)
    row = rows[best["queries_to_best"] - 1]
    assert row["arch"] == best["arch"] and int(row["flops"]) == best["flops"]
    space = MobileSpace(SPACE_CFG, initial_state(SPACE_CFG))
    arch = space.from_string(best["arch"])
    assert best["ops"] == [list(o) for o in space.ops(arch)] and best["params"] == space.params(arch)

    metrics = json.loads(outputs["metrics"].read_text())
    assert metrics == {"best_acc": max(accs), "queries": 12, "queries_to_best": best["queries_to_best"]}
    told = [tuple(h["arch"]) for h in json.loads(outputs["state"].read_text())["method"]["history"]]
    if method == "relativenas":  # joint learning: every evaluation is a query
        assert len(told) == 12
    else:  # REA's repeats are told (they join its population) but not charged
        assert len(set(told)) == 12 and {r["arch"] for r in rows} == {space.to_string(a) for a in told}
    curve = [(v, s) for k, v, s in tracker.metrics if k == "best_acc"]
    assert [s for _, s in curve] == list(range(1, 13)) and curve[-1][0] == max(accs)


def test_rea_repeats_are_told_but_not_charged(inputs, tmp_path):
    """Textbook REA in the study: a repeated child joins the population (it is in state.json's
    history) but is answered from the cache: the budget, history.csv and best.json count queries."""
    outputs, tracker = run_search(inputs, tmp_path, budget=20)
    told = [tuple(h["arch"]) for h in json.loads(outputs["state"].read_text())["method"]["history"]]
    assert len(told) > len(set(told)) == 20  # some children were repeats
    rows = read_rows(outputs["history"])
    assert [int(r["query"]) for r in rows] == list(range(1, 21)) and len({r["arch"] for r in rows}) == 20
    best = json.loads(outputs["best"].read_text())
    first = {}
    for arch in told:
        first.setdefault(arch, len(first) + 1)
    space = MobileSpace(SPACE_CFG, initial_state(SPACE_CFG))
    assert best["queries"] == 20 and best["queries_to_best"] == first[space.from_string(best["arch"])]
    assert [s for k, _, s in tracker.metrics if k == "best_acc"] == list(range(1, 21))


def test_resume_continues_exactly(inputs, tmp_path, monkeypatch):
    straight, _ = run_search(inputs, tmp_path / "straight", budget=20)
    run_search(inputs, tmp_path / "resumed", budget=10)  # as if the job had died after 10 queries
    calls = []
    real = training.score_arch
    monkeypatch.setattr(training, "score_arch", lambda *a, **k: calls.append(1) or real(*a, **k))
    resumed, _ = run_search(inputs, tmp_path / "resumed", budget=20)
    assert len(calls) == 10  # only the missing queries were scored
    for key in ("history", "best", "state", "metrics"):
        assert resumed[key].read_bytes() == straight[key].read_bytes(), key


def test_relativenas_learns_jointly_and_resumes_exactly(inputs, tmp_path, monkeypatch):
    """The pairs train the shared weights, and a job stopped after 2 pairs ends exactly as an
    uninterrupted one, training only the missing pairs."""
    straight, tracker = run_search(inputs, tmp_path / "straight", budget=12, method="relativenas")
    assert len(read_rows(straight["history"])) == 12
    losses = [v for k, v, _ in tracker.metrics if k == "pair_train_loss"]
    assert len(losses) == 6 and np.isfinite(losses).all()
    # the paper's cosine lr over budget / population = 3 epochs, one value per epoch (2 pairs each)
    lrs = [v for k, v, _ in tracker.metrics if k == "joint_lr"]
    want = [0.001 + 0.049 * (1 + math.cos(math.pi * e / 3)) / 2 for e in (0, 0, 1, 1, 2, 2)]
    assert lrs == pytest.approx(want)
    state = json.loads(straight["state"].read_text())
    saved = torch.load(io.BytesIO(base64.b64decode(state["joint"]["torch"])), weights_only=True)["supernet"]
    start = torch.load(inputs["supernet"], weights_only=True)["state_dict"]
    assert any(not torch.equal(start[k], saved[k]) for k in start)  # the merged weights moved

    run_search(inputs, tmp_path / "resumed", budget=4, method="relativenas")  # as if killed after 2 pairs
    real, calls = joint_training.train_pair_on_supernet, []
    monkeypatch.setattr(joint_training, "train_pair_on_supernet", lambda *a, **k: calls.append(1) or real(*a, **k))
    resumed, _ = run_search(inputs, tmp_path / "resumed", budget=12, method="relativenas")
    assert len(calls) == 4
    for key in ("history", "best", "metrics", "state"):
        assert resumed[key].read_bytes() == straight[key].read_bytes(), key


def test_relativenas_needs_an_even_budget(inputs, tmp_path):
    with pytest.raises(ValueError, match=r"search.budget must be even for relativenas.*got 5"):
        run_search(inputs, tmp_path, budget=5, method="relativenas")


def test_broken_state_starts_afresh(inputs, tmp_path):
    (tmp_path / "state.json").write_text("{not json")
    outputs, _ = run_search(inputs, tmp_path, budget=3, method="random")
    assert len(read_rows(outputs["history"])) == 3


def test_table_evaluator(tmp_path):
    space = ToySpace()
    archs = [(0,) * 6, (2, 0, 1, 2, 2, 0), (1, 1, 1, 1, 1, 1)]
    path = tmp_path / "table.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["arch", "valid_acc", "train_time", "flops"])
        for a in archs:
            writer.writerow([space.to_string(a), score(a)["acc"], 10 + sum(a), 1000 + 100 * sum(a)])

    table = TableEvaluator(path, space, metric="valid_acc", cost="train_time")
    m = table.evaluate(archs[1])
    assert m["acc"] == score(archs[1])["acc"] and m["cost"] == 17.0
    assert m["flops"] == 1700 and m["params"] == space.params(archs[1]) and np.isnan(m["loss"])
    assert table.evaluate(list(archs[1])) == m and table.queries == 1  # a repeat costs nothing
    table.evaluate(archs[0])
    assert table.queries == 2
    with pytest.raises(KeyError, match="2-2-2-2-2-2"):
        table.evaluate((2,) * 6)
    with pytest.raises(ValueError, match=r"\['test_acc'\]"):
        TableEvaluator(path, space, metric="test_acc")
    with pytest.raises(ValueError, match="latency"):
        TableEvaluator(path, space, metric="valid_acc", cost="latency")
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        TableEvaluator(tmp_path / "missing.csv", space, metric="valid_acc")
