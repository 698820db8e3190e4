"""The tabular benchmark: one (method, seed) run against a table, the summary, and the Snakemake target."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers.e2e import snakemake

from nasstudy import search_loop
from nasstudy.benchmarks import search, summary
from nasstudy.evaluators import STALL_REPEATS
from nasstudy.methods.rea import RegularizedEvolution
from nasstudy.methods.weaknas import WeakNAS
from nasstudy.spaces.nb201 import arch_string
from nasstudy.tracking import MemoryTracker

ROOT = Path(__file__).resolve().parents[1]
OPS = ["nor_conv_3x3", "skip_connect", "avg_pool_3x3"]


def write_table(path: Path) -> str:
    """A smooth synthetic table over the 3^6 subspace; returns the unique best arch string."""
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(6, 3))
    rows = []
    for choice in itertools.product(range(3), repeat=6):
        s = arch_string([OPS[c] for c in choice])
        score = float(sum(weights[e, c] for e, c in enumerate(choice)))
        rows.append({"arch": s, "valid": 80 + score, "test": 79 + score + rng.normal(0, 0.1),
                     "loss": 1 - score / 10})  # fmt: skip
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return max(rows, key=lambda r: r["valid"])["arch"]


def bench_params(table: Path, methods: dict) -> dict:
    return {"seed": 0, "study": "b", "device": "cpu", "threads": 1, "table": str(table),
            "space": {"name": "nb201", "initial_ops": OPS}, "search_metric": "valid", "report_metric": "test",
            "loss_metric": "loss", "budgets": [5, 20, 100], "methods": methods}  # fmt: skip


def run_job(tmp_path: Path, method: str, spec: dict, runs: list[int]) -> dict:
    """One benchmark search job (the seeds in `runs`): its output paths."""
    table = tmp_path / "table.csv"
    if not table.exists():
        tmp_path.mkdir(parents=True, exist_ok=True)
        write_table(table)
    out = {k: tmp_path / method / f"seeds-{runs[0]}" / f"{k}.{ext}"
           for k, ext in (("history", "csv"), ("results", "json"), ("timings", "json"))}  # fmt: skip
    params = {**bench_params(table, {method: spec}), "runs": runs}
    search.run({}, out, params, {"method": method, "first": str(runs[0])}, MemoryTracker())
    return out


def run_one(tmp_path: Path, method: str, spec: dict, run: int = 0) -> dict:
    """One seed as a job of its own: its result and its history rows (without the `run` column)."""
    out = run_job(tmp_path, method, spec, [run])
    (data,) = json.loads(out["results"].read_text())
    history = [{k: v for k, v in row.items() if k != "run"} for row in csv.DictReader(open(out["history"]))]
    return {"data": data, "history": history}


@pytest.mark.parametrize("method", ["random", "rea", "weaknas", "ganas", "relativenas"])
def test_each_method_finds_the_best_arch_of_a_small_table(tmp_path: Path, method: str) -> None:
    knobs = {"rea": {"population": 10, "tournament": 3}, "weaknas": {"top_m": 20}, "ganas": {"initial": 10},
             "relativenas": {"population": 10}}.get(method, {})  # fmt: skip
    out = run_one(tmp_path, method, {"budget": 729, "params": knobs})
    r = out["data"]
    assert r["targets"] == 1
    assert r["found_at"] is not None and r["found_at"] <= r["queries"] <= 729
    history = out["history"]
    assert [int(h["query"]) for h in history] == list(range(1, r["queries"] + 1))  # only new archs count
    assert float(history[-1]["best_search_acc"]) == max(float(h["search_acc"]) for h in history)
    assert r["pick_report_acc_at"]["5"] == float(history[4]["pick_report_acc"])


def test_sequential_rea_is_asked_one_at_a_time_and_its_repeats_are_free(tmp_path: Path, monkeypatch) -> None:
    """REA sees every result before its next child; a repeated child is told (it joins the
    population) but is a free lookup: not a query, not a history row. WeakNAS keeps its batches."""
    sizes: dict[str, list[int]] = {"rea": [], "weaknas": []}
    for cls, name in ((RegularizedEvolution, "rea"), (WeakNAS, "weaknas")):
        monkeypatch.setattr(cls, "ask", lambda self, n, real=cls.ask, name=name: sizes[name].append(n) or real(self, n))
    out = run_one(tmp_path, "rea", {"budget": 729, "params": {"population": 10, "tournament": 3}})
    r = out["data"]
    assert set(sizes["rea"]) == {1} and r["stop"] == "found"
    assert r["asks"] > r["queries"]  # some children were repeats ...
    assert len(out["history"]) == r["queries"] == r["found_at"]  # ... not charged
    run_one(tmp_path, "weaknas", {"budget": 60, "params": {"top_m": 20}})
    assert set(sizes["weaknas"]) == {search_loop.BATCH}


def test_a_stalled_run_is_recorded_with_its_queries(tmp_path: Path) -> None:
    """RelativeNAS with a population of 2 converges at once: the pair decodes to archs already seen
    forever after. The run stops as `stalled` (not a budget miss) with the queries it spent."""
    r = run_one(tmp_path, "relativenas", {"budget": 729, "params": {"population": 2}})["data"]
    assert r["stop"] == "stalled" and r["queries"] < 729
    assert r["asks"] >= r["queries"] + STALL_REPEATS
    results = [
        {**r, "method": "m"},
        {"method": "m", "budget": 729, "queries": 729, "stop": "budget", "found_at": None,
         "found_at_or_predicted": None, "pick_report_acc_at": {}},
        {"method": "m", "budget": 729, "queries": 40, "stop": "found", "found_at": 40,
         "found_at_or_predicted": 40, "pick_report_acc_at": {}},
    ]  # fmt: skip
    (row,) = summary.summarise(results, [{"seconds": 1.0}] * 3, [])
    assert (row["found"], row["missed"], row["stalled"]) == (1, 2, 1)
    assert row["stalled_queries_mean"] == r["queries"]
    md = summary.markdown([row], [], {"study": "s", "table": "t", "search_metric": "a", "report_metric": "b"})
    assert f"| 1/3 | 1 ({r['queries']:g}) |" in md


def test_budget_stops_a_run_and_a_miss_is_recorded(tmp_path: Path) -> None:
    r = run_one(tmp_path, "random", {"budget": 3})["data"]
    assert r["queries"] == 3 and r["stop"] in ("budget", "found")
    assert r["found_at"] is None or r["found_at"] <= 3


def test_same_seed_same_run(tmp_path: Path) -> None:
    a = run_one(tmp_path / "a", "weaknas", {"budget": 100, "params": {"top_m": 20}})
    b = run_one(tmp_path / "b", "weaknas", {"budget": 100, "params": {"top_m": 20}})
    assert a == b


def test_a_seed_gives_the_same_run_whichever_job_runs_it(tmp_path: Path) -> None:
    """Seeds are grouped into jobs (`seeds_per_job`) only to save start-up time: seed 1 run after
    seed 0 in one job is the same run as seed 1 alone (its random streams are its own)."""
    spec = {"budget": 100, "params": {"top_m": 20}}
    both = run_job(tmp_path / "both", "weaknas", spec, [0, 1])
    alone = run_job(tmp_path / "alone", "weaknas", spec, [1])
    results = json.loads(both["results"].read_text())
    assert [r["run"] for r in results] == [0, 1]
    assert results[1] == json.loads(alone["results"].read_text())[0]
    rows = [row for row in csv.DictReader(open(both["history"])) if row["run"] == "1"]
    assert rows == list(csv.DictReader(open(alone["history"])))
    assert [t["run"] for t in json.loads(both["timings"].read_text())] == [0, 1]


def test_summary_counts_misses_and_gives_both_counts(tmp_path: Path) -> None:
    results = [
        {"method": "m", "budget": 10, "found_at": 4, "found_at_or_predicted": 2, "pick_report_acc_at": {"5": 1.0}},
        {"method": "m", "budget": 10, "found_at": None, "found_at_or_predicted": 8, "pick_report_acc_at": {"5": 3.0}},
    ]
    rows = summary.summarise(results, [{"seconds": 1.0}, {"seconds": 3.0}], [5])
    row = rows[0]
    assert (row["found"], row["missed"], row["queries_mean"]) == (1, 1, 4.0)
    assert row["queries_mean_with_misses"] == 7.5  # the miss counts as budget + 1
    assert (row["found_or_predicted"], row["queries_or_predicted_mean"]) == (2, 5.0)
    assert row["report_acc_at_5"] == 2.0 and row["seconds_total"] == 4.0


@pytest.mark.slow
def test_benchmark_target_runs_every_method_and_seed(tmp_path: Path) -> None:
    table = tmp_path / "table.csv"
    write_table(table)
    params = {"study": "tinybench", "table": str(table), "seeds": 3, "seeds_per_job": 2, "budgets": [5, 50],
              "space": {"initial_ops": OPS}, "search_metric": "valid", "report_metric": "test", "loss_metric": "loss",
              "methods": {"random": {"budget": 729}, "rea": {"budget": 200, "params": {"population": 10}},
                          "weaknas": {"budget": 200, "params": {"top_m": 20}}}}  # fmt: skip
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(params))
    out = snakemake(
        tmp_path, "-s", str(ROOT / "workflow" / "bench" / "nb201.smk"), "--configfile", str(tmp_path / "bench.yaml")
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "results/tinybench/summary.csv")))
    assert [r["method"] for r in rows] == ["random", "rea", "weaknas"]
    assert all(r["runs"] == "3" for r in rows)
    assert (tmp_path / "results/tinybench/curves.png").stat().st_size > 1000
    jobs = sorted(p.parent.relative_to(tmp_path / "results/tinybench/runs").as_posix()
                  for p in (tmp_path / "results/tinybench/runs").rglob("results.json"))  # fmt: skip
    assert jobs == [f"{m}/seeds-{first}" for m in ("random", "rea", "weaknas") for first in (0, 2)]
