"""Ranking sample: seeded uniform archs scored as search scores them, then retrained as retrain does."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from helpers.tiny_inputs import RETRAIN, SPACE_CFG, SUPERNET, make_inputs

from nasstudy.evaluators import SupernetEvaluator
from nasstudy.spaces.mobile import MobileSpace, initial_state
from nasstudy.stages import ranking, ranking_sample, retrain
from nasstudy.tracking import MemoryTracker

BASE = {"study": "t", "device": "cpu", "threads": 1, "space": SPACE_CFG}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_inputs(tmp_path_factory.mktemp("inputs"))


def draw(inputs: dict[str, Path], out: Path, sample: int = 4, seed: int = 0, space: str = "initial") -> Path:
    params = {**BASE, "seed": seed, "supernet": SUPERNET, "ranking": {"sample": sample}}
    outputs = {"sample": out / "sample.csv"}
    ins = {k: inputs[k] for k in ("cls_train", "cls_val", "supernet")}
    ranking_sample.run(ins, outputs, params, {"space": space}, MemoryTracker())
    return outputs["sample"]


def test_sample_has_the_contract_columns_and_scores_as_search_does(inputs: dict[str, Path], tmp_path: Path) -> None:
    path = draw(inputs, tmp_path)
    with open(path, newline="") as f:
        assert next(csv.reader(f)) == ["index", "arch", "ops", "supernet_acc", "supernet_loss", "flops", "params"]
    rows = ranking.read_sample(path)
    assert [r["index"] for r in rows] == [0, 1, 2, 3] and len({r["arch"] for r in rows}) == 4
    space = MobileSpace(SPACE_CFG, initial_state(SPACE_CFG))
    search_scorer = SupernetEvaluator(inputs["supernet"], inputs["cls_train"], inputs["cls_val"], **SUPERNET)
    for r in rows:
        arch = space.from_string(r["arch"])
        assert r["ops"] == [list(o) for o in space.ops(arch)]
        m = search_scorer.evaluate(arch)
        assert (float(r["supernet_acc"]), float(r["supernet_loss"])) == (m["acc"], m["loss"])
        assert (int(r["flops"]), int(r["params"])) == (m["flops"], m["params"])


def test_sample_is_seeded(inputs: dict[str, Path], tmp_path: Path) -> None:
    first = draw(inputs, tmp_path / "a").read_bytes()
    assert draw(inputs, tmp_path / "b").read_bytes() == first  # the same on a rerun
    archs = [r["arch"] for r in ranking.read_sample(tmp_path / "a" / "sample.csv")]
    other_seed = [r["arch"] for r in ranking.read_sample(draw(inputs, tmp_path / "c", seed=1))]
    other_space = [r["arch"] for r in ranking.read_sample(draw(inputs, tmp_path / "d", space="nse"))]
    assert other_seed != archs and other_space != archs


def test_draw_archs_are_distinct_and_bounded_by_the_space() -> None:
    space = MobileSpace(SPACE_CFG, initial_state(SPACE_CFG))  # 6 binary decisions: 64 archs
    archs = ranking.draw_archs(space, 64, np.random.default_rng(0))
    assert len(set(archs)) == 64
    with pytest.raises(ValueError, match="ranking.sample = 65 is more than the 64 archs"):
        ranking.draw_archs(space, 65, np.random.default_rng(0))


def retrain_one(inputs: dict[str, Path], sample: Path, out: Path, index: int) -> dict[str, Path]:
    outputs = {"metrics": out / "metrics.json", "timing": out / "timing.json", "curve": out / "curve.csv"}
    ins = {k: inputs[k] for k in ("cls_train", "cls_val", "cls_test")} | {"sample": sample}
    params = {**BASE, "seed": 0, "retrain": RETRAIN}
    ranking.run(ins, outputs, params, {"space": "initial", "index": str(index)}, MemoryTracker())
    return outputs


def test_ranking_retrains_an_arch_with_the_retrain_keys(inputs: dict[str, Path], tmp_path: Path) -> None:
    sample = draw(inputs, tmp_path, sample=3)
    out = retrain_one(inputs, sample, tmp_path / "arch1", 1)
    row = ranking.read_sample(sample)[1]
    metrics = json.loads(out["metrics"].read_text())
    assert set(metrics) == {"test_acc", "val_acc", "params", "flops", "supernet_acc", "arch"}
    assert metrics["arch"] == row["arch"] and metrics["supernet_acc"] == float(row["supernet_acc"])
    assert (metrics["flops"], metrics["params"]) == (int(row["flops"]), int(row["params"]))
    assert set(json.loads(out["timing"].read_text())) == {"latency_ms", "train_seconds"}
    with open(out["curve"], newline="") as f:
        assert [list(r) for r in csv.DictReader(f)] == [retrain.CURVE_COLUMNS] * RETRAIN["epochs"]
    assert not list((tmp_path / "arch1").glob("*.pt"))  # no model.pt: only the numbers are needed
    again = retrain_one(inputs, sample, tmp_path / "again", 1)
    assert again["metrics"].read_bytes() == out["metrics"].read_bytes()
    with pytest.raises(ValueError, match="has no arch 3"):
        retrain_one(inputs, sample, tmp_path / "arch3", 3)
