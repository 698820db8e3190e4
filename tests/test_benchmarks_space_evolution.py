"""Space evolution on nb201 by table: the three generations, the stage, the summary, the Snakemake target."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers.e2e import snakemake

from nasstudy import config as nasconfig
from nasstudy.benchmarks import space_evolution, space_summary
from nasstudy.evaluators import TableEvaluator
from nasstudy.evolution.table_evolution import (
    GENERATIONS,
    TableEvoConfig,
    autospace_table_generation,
    full_space,
    nse_table_generation,
    random_subspace_generation,
    table_generation,
)
from nasstudy.spaces.nb201 import OPS, arch_string, initial_state
from nasstudy.tracking import MemoryTracker
from nasstudy.utils import make_rng

ROOT = Path(__file__).resolve().parents[1]
SPACE = {"name": "nb201", "initial_ops": ["none", "avg_pool_3x3"]}


def write_table(path: Path) -> None:
    """All 5^6 archs with a smooth score: nor_conv_3x3 best on every edge, so the optimum is outside SPACE."""
    weights = np.array([0.0, 1.0, 2.0, 3.0, 0.5])
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch", "valid", "test"])
        for choice in itertools.product(range(5), repeat=6):
            score = float(weights[list(choice)].sum()) + 0.01 * choice[0]
            w.writerow([arch_string([OPS[c] for c in choice]), 70 + score, 69 + score])


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tbl") / "table.csv"
    write_table(path)
    return path


def evaluator(table: Path) -> TableEvaluator:
    return TableEvaluator(table, full_space(SPACE), "valid")


def test_nse_keeps_the_front_ops_and_tops_up_to_k(table: Path) -> None:
    ev = evaluator(table)
    state = initial_state(SPACE)
    out = nse_table_generation(state, SPACE, ev, TableEvoConfig(samples=64), np.random.default_rng(0))
    # none and avg_pool cost no FLOPs: the front is the single best arch (avg_pool everywhere).
    for edge in out.state["edges"]:
        assert edge["active"] == ["avg_pool_3x3", "skip_connect"]
        assert edge["queue"] == ["nor_conv_1x1", "nor_conv_3x3", "none"]
    assert out.queries == ev.queries == out.measured["sampled"] <= 64


def test_nse_scores_last_fronts_archs_again_and_keeps_their_ops(table: Path) -> None:
    """The authors' prev_bests: last round's front archs join this round's front computation, so
    the ops of every one of them (not only the best's) survive even when no draw uses them."""
    ev = evaluator(table)
    edges = [{"active": ["nor_conv_3x3", "skip_connect"], "queue": ["none", "nor_conv_1x1", "avg_pool_3x3"]}] * 6
    best, cheap = ["nor_conv_3x3"] * 6, ["skip_connect"] * 6  # most accurate; no FLOPs: both non-dominated
    for ops in (best, cheap):
        ev.evaluate(tuple(OPS.index(o) for o in ops))
    state = {"edges": edges, "front": [best, cheap]}
    for seed in range(5):  # one draw: it holds one op per edge, so without the old front one op would drop
        out = nse_table_generation(state, SPACE, ev, TableEvoConfig(samples=1), np.random.default_rng(seed))
        assert best in out.state["front"] and cheap in out.state["front"]
        assert all(e["active"] == ["nor_conv_3x3", "skip_connect"] for e in out.state["edges"])
        assert out.measured["rescored"] >= 1 and out.queries <= 1  # the old front's archs were cached (free)
        assert out.state["elite"] == {"ops": best, "acc": ev.cache[(3,) * 6]["acc"]}


def test_autospace_table_variant_has_its_own_name_and_draws_beyond_its_subspace(table: Path) -> None:
    """The table variant (reference follows the elite, tournaments over the whole population) is
    not AutoSpace as the mobile space runs it: it is reported as `autospace_elite`."""
    assert sorted(GENERATIONS) == ["autospace_elite", "nse", "random"]
    with pytest.raises(nasconfig.ParamsError, match="unknown key 'methods.autospace'"):
        nasconfig.validate({"study": "s", "table": "t.csv", "methods": {"autospace": {}}}, "bench_space")
    ev, state = evaluator(table), initial_state(SPACE)
    cfg = TableEvoConfig(samples=20, population=5, reference="avg_pool_3x3")
    out = autospace_table_generation(state, SPACE, ev, cfg, np.random.default_rng(0))
    outside = [a for a in ev.cache if any(OPS[i] not in e["active"] for i, e in zip(a, state["edges"]))]
    assert outside  # its draws are not confined to the k-op subspace, unlike NSE's and random's
    assert out.queries == len(ev.cache)


def test_autospace_keeps_the_reference_and_swaps_in_mutants(table: Path) -> None:
    ev = evaluator(table)
    cfg = TableEvoConfig(samples=30, population=3, reference="avg_pool_3x3")
    state, rng = initial_state(SPACE), np.random.default_rng(1)
    for _ in range(6):
        out = autospace_table_generation(state, SPACE, ev, cfg, rng)
        state = out.state
        # The reference arch follows the best arch found (the elite) and stays active on every edge.
        assert state["elite"]["acc"] == max(m["acc"] for m in ev.cache.values())
        for edge, elite_op in zip(state["edges"], state["elite"]["ops"]):
            assert edge["reference"] == elite_op == edge["active"][0] and len(edge["active"]) == 2
            assert sorted([m["op"] for m in edge["population"]] + edge["queue"]) == sorted(OPS)
    assert any("nor_conv_3x3" in [m["op"] for m in e["population"]] for e in state["edges"])
    with pytest.raises(ValueError, match="reference"):
        autospace_table_generation(initial_state(SPACE), SPACE, ev, TableEvoConfig(reference="nor_conv_3x3"), rng)


def test_random_baseline_draws_k_ops_and_keeps_the_best_seen(table: Path) -> None:
    ev = evaluator(table)
    state, rng = initial_state(SPACE), np.random.default_rng(2)
    best = -1.0
    for _ in range(5):
        out = random_subspace_generation(state, SPACE, ev, TableEvoConfig(samples=8, k=3), rng)
        assert all(len(d) == 3 for d in out.measured["drawn"])
        assert out.state["elite"]["acc"] >= best
        best, state = out.state["elite"]["acc"], out.state


def best_queried_in(state: dict, ev: TableEvaluator) -> float:
    """The best search acc among the archs queried so far that the subspace holds."""
    return max(m["acc"] for a, m in ev.cache.items() if all(OPS[i] in e["active"] for i, e in zip(a, state["edges"])))


@pytest.mark.parametrize("method", ["nse", "autospace_elite", "random"])
def test_no_drift_the_subspace_keeps_the_best_arch_queried(table: Path, method: str) -> None:
    # Few draws per generation, so that a generation often misses the best arch it already holds:
    # without elitism the subspace then drops its ops and the best known subspace acc goes down.
    cfg = TableEvoConfig(samples=6, population=5, reference="avg_pool_3x3")
    for seed in range(4):
        ev, state, rng = evaluator(table), initial_state(SPACE), np.random.default_rng(seed)
        held = -np.inf
        for gen in range(12):
            state = table_generation(method)(state, SPACE, ev, cfg, rng).state
            best_queried = max(m["acc"] for m in ev.cache.values())
            now = best_queried_in(state, ev)
            assert now >= held, f"seed {seed} gen {gen}: the best queried acc in the subspace fell {held} -> {now}"
            assert now == best_queried, f"seed {seed} gen {gen}: the subspace lost the best arch queried"
            held = now


@pytest.mark.parametrize("method", ["nse", "autospace_elite", "random"])
def test_a_run_is_reproducible_from_its_seed(table: Path, method: str) -> None:
    cfg = TableEvoConfig(samples=8, population=5, reference="avg_pool_3x3")

    def trajectory(run: int) -> list:
        ev, state = evaluator(table), initial_state(SPACE)
        rng = make_rng(0, space_evolution.STAGE, method, run)
        out = []
        for _ in range(6):
            result = table_generation(method)(state, SPACE, ev, cfg, rng)
            state = result.state
            out.append((json.dumps(state, sort_keys=True), result.queries))
        return out

    assert trajectory(0) == trajectory(0)
    assert trajectory(0) != trajectory(1)  # the seed, not something else, drives the draws


def test_validation_fills_each_methods_defaults_from_the_schema() -> None:
    cfg = nasconfig.validate(
        {"study": "s", "table": "t.csv", "methods": {"nse": {}, "autospace_elite": {"samples": 7}}}, "bench_space"
    )
    defaults = dataclasses.asdict(TableEvoConfig())
    assert cfg["methods"]["nse"] == defaults
    assert cfg["methods"]["autospace_elite"] == {**defaults, "samples": 7}
    # One source: the config class's defaults are the schema's.
    props = nasconfig.schema("bench_space")["definitions"]["table_evo"]["properties"]
    assert defaults == {k: v["default"] for k, v in props.items()}
    assert TableEvoConfig.from_params(cfg["methods"]["autospace_elite"]).samples == 7
    with pytest.raises(nasconfig.ParamsError, match="methods.nse.bogus"):
        nasconfig.validate({"study": "s", "table": "t.csv", "methods": {"nse": {"bogus": 1}}}, "bench_space")
    with pytest.raises(nasconfig.ParamsError, match="methods.foo"):
        nasconfig.validate({"study": "s", "table": "t.csv", "methods": {"foo": {}}}, "bench_space")


def params(table: Path, generations: int = 8) -> dict:
    return {"seed": 0, "study": "s", "table": str(table), "space": SPACE, "search_metric": "valid",
            "report_metric": "test", "tolerance": 0.3, "generations": generations,
            "methods": {"nse": {"samples": 20}, "autospace_elite": {"samples": 20, "population": 5},
                        "random": {"samples": 20}}}  # fmt: skip


def run_one(tmp: Path, table: Path, method: str, run: int = 0) -> dict:
    out = {"history": tmp / method / str(run) / "history.csv", "result": tmp / method / str(run) / "result.json"}
    space_evolution.run({}, out, params(table), {"method": method, "run": str(run)}, MemoryTracker())
    return out


@pytest.mark.parametrize("method", ["nse", "autospace_elite", "random"])
def test_stage_writes_history_and_is_deterministic(tmp_path: Path, table: Path, method: str) -> None:
    a, b = run_one(tmp_path / "a", table, method), run_one(tmp_path / "b", table, method)
    assert a["history"].read_bytes() == b["history"].read_bytes()
    rows = list(csv.DictReader(open(a["history"])))
    assert [int(r["gen"]) for r in rows] == list(range(9))
    assert json.loads(rows[0]["subspace"]) == [SPACE["initial_ops"]] * 6
    assert int(rows[-1]["queries_total"]) == sum(int(r["queries_this_gen"]) for r in rows)
    elite = [float(r["elite_search"]) for r in rows[1:]]
    assert elite == sorted(elite)  # the elite (the best arch queried, kept in the subspace) never gets worse
    assert all(float(r["elite_test"]) <= float(r["best_test"]) for r in rows[1:])
    res = json.loads(a["result"].read_text())
    assert res["optimum"] == 69 + 18 + 0.03 and res["initial_best_test"] == 69 + 3 + 0.04
    assert res["final_elite_test"] == float(rows[-1]["elite_test"])
    if res["reached_at_generation"] is not None:
        assert float(rows[res["reached_at_generation"]]["best_test"]) >= res["optimum"] - 0.3


def test_stage_refuses_a_start_that_holds_the_optimum(tmp_path: Path, table: Path) -> None:
    p = {**params(table), "space": {"name": "nb201", "initial_ops": ["nor_conv_3x3", "none"]}}
    with pytest.raises(ValueError, match="holds the optimum"):
        space_evolution.run({}, {"history": tmp_path / "h", "result": tmp_path / "r"}, p,
                                  {"method": "nse", "run": "0"}, MemoryTracker())  # fmt: skip


def test_summary_counts_the_seeds_that_reached() -> None:
    results = [
        {"method": "m", "reached_at_generation": 2, "queries_to_reach": 30, "final_best_test": 94.0,
         "final_elite_test": 93.0, "queries_total": 50},
        {"method": "m", "reached_at_generation": None, "queries_to_reach": None, "final_best_test": 88.0,
         "final_elite_test": 87.0, "queries_total": 70},
    ]  # fmt: skip
    rows = space_summary.summarise(results, [np.array([80.0, 90.0, 94.0]), np.array([80.0, 90.0, 88.0])])
    r = rows[0]
    assert (r["runs"], r["reached"], r["queries_mean"], r["generations_median"]) == (2, 1, 30.0, 2.0)
    assert r["best_test_mean"] == [80.0, 90.0, 91.0] and r["queries_total_mean"] == 60.0
    assert r["final_elite_test_mean"] == 90.0 and r["drift_mean"] == 1.0  # (0 + (90 - 88)) / 2


@pytest.mark.slow
def test_space_benchmark_target_runs_every_method_and_seed(tmp_path: Path, table: Path) -> None:
    cfg = {**params(table, generations=2), "study": "tinyspace", "seeds": 2}
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake(
        tmp_path,
        "-s",
        str(ROOT / "workflow" / "bench" / "space_nb201.smk"),
        "--configfile",
        str(tmp_path / "bench.yaml"),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = list(csv.DictReader(open(tmp_path / "results/tinyspace/summary.csv")))
    assert sorted(r["method"] for r in summary) == ["autospace_elite", "nse", "random"]  # safe_dump sorts the keys
    assert all(r["runs"] == "2" for r in summary)
    assert (tmp_path / "results/tinyspace/curves.png").stat().st_size > 1000
    assert len(list((tmp_path / "results/tinyspace/runs").rglob("history.csv"))) == 6
