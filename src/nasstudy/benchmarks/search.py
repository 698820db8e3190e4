"""Rule `bench_search` (workflow/bench/nb201.smk): one search method, a few seeds one after another,
against a lookup table (NAS-Bench-201 style).

A job runs the seeds in `runs` (`seeds_per_job` of them from `first`): the search itself takes milliseconds to
seconds, so one job per seed would spend most of its time starting Python, torch and MLflow. Each
seed has its own random stream (study seed, method, seed number), so the results do not depend on
how the seeds are grouped into jobs.

Counts the queries until an arch with the best search-metric value is queried (ties count as
found) and, for methods with a predictor (WeakNAS), also until the predictor's top-1 is such an
arch, which the authors count as found without charging a query. The ask/tell loop is the study
search's (nasstudy.search_loop): a sequential method (REA, RelativeNAS) is asked one arch at a time,
so each proposal sees every result before it, the others `search_loop.BATCH` at a time; a repeat is
a free table lookup: told to the method, never charged.
The run stops (`stop` in result.json) once the target is `found` (both ways), the `budget` is
spent, or the method `stalled` (only repeats, `STALL_REPEATS` in a row: no unseen proposals left).
What a method would pick at each budget is the arch with the best search metric so far, and its
report metric is what the summary shows.
"""

from __future__ import annotations

import csv
import io
import sys
import time
from pathlib import Path

from nasstudy import search_loop
from nasstudy.evaluators import TableEvaluator
from nasstudy.methods import make_method
from nasstudy.spaces import make_space
from nasstudy.tracking import Tracker
from nasstudy.utils import atomic_write_bytes, make_rng, seed_torch, write_json

STAGE = "bench_search"  # the rule's name: every seed derives from it (the module moved, the seeds did not)
HISTORY_COLUMNS = ("query", "arch", "search_acc", "report_acc", "best_search_acc", "pick_report_acc")


def targets(evaluator: TableEvaluator, space, metric: str) -> set[tuple[int, ...]]:
    """Every arch of the space whose search metric equals the best (ties are all targets)."""
    values = {arch: float(evaluator.rows[space.to_string(arch)][metric]) for arch in space.enumerate()}
    best = max(values.values())
    return {a for a, v in values.items() if v == best}


def search_one(params: dict, method_name: str, run_seed: int) -> tuple[list[tuple], dict, float]:
    """One (method, seed) run: its history rows, its result and the seconds it took."""
    rng = make_rng(params["seed"], STAGE, method_name, run_seed)
    space = make_space(params["space"], None)
    evaluator = TableEvaluator(params["table"], space, params["search_metric"], loss=params.get("loss_metric"))
    goal = targets(evaluator, space, params["search_metric"])
    spec = params["methods"][method_name]
    budget = min(int(spec["budget"]), len(space.enumerate()))
    method = make_method(method_name, space, spec.get("params", {}), rng)
    if "torch" in sys.modules:  # GA-NAS, WeakNAS: one thread, deterministic kernels (the others never load torch)
        seed_torch(params["seed"], STAGE, method_name, run_seed, threads=params["threads"])
    report = params["report_metric"]

    found_at = found_pred_at = None
    has_predictor = hasattr(method, "predicted_best")

    def done() -> bool:
        return found_at is not None and (found_pred_at is not None or not has_predictor)

    def told(new: list[search_loop.Query]) -> None:
        nonlocal found_at, found_pred_at
        if found_at is None:
            found_at = next((q.number for q in new if tuple(q.arch) in goal), None)
        predicted = method.predicted_best() if has_predictor else None
        if found_pred_at is None and predicted is not None and tuple(predicted) in goal:
            found_pred_at = evaluator.queries

    start = time.perf_counter()
    searched = search_loop.search(method, evaluator, budget, f"{method_name} #{run_seed}", stop=done, told=told)
    rows, best_search, pick_report = [], float("-inf"), float("nan")
    for q in searched.queries:
        row = evaluator.rows[space.to_string(q.arch)]
        if q.metrics["acc"] > best_search:
            best_search, pick_report = q.metrics["acc"], float(row[report])
        rows.append((q.number, space.to_string(q.arch), q.metrics["acc"], float(row[report]), best_search, pick_report))
    stop = "found" if done() else "stalled" if evaluator.stalled() else "budget"
    seconds = time.perf_counter() - start
    found = [x for x in (found_at, found_pred_at) if x is not None]
    picks = {str(b): (rows[min(b, len(rows)) - 1][5] if rows else None) for b in params["budgets"]}
    result = {
        "method": method_name,
        "run": run_seed,
        "budget": budget,
        "queries": evaluator.queries,
        "asks": searched.asks,
        "stop": stop,
        "targets": len(goal),
        "found_at": found_at,
        "found_at_or_predicted": min(found) if found else None,
        "best_search_acc": best_search,
        "pick_report_acc": pick_report,
        "pick_report_acc_at": picks,
    }
    return rows, result, seconds


def run(inputs: dict[str, Path], outputs: dict[str, Path], params: dict, wildcards: dict[str, str],
        tracker: Tracker) -> None:  # fmt: skip
    method_name = wildcards["method"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["run", *HISTORY_COLUMNS])
    results, timings = [], []
    for run_seed in params["runs"]:
        rows, result, seconds = search_one(params, method_name, run_seed)
        writer.writerows((run_seed, *row) for row in rows)
        results.append(result)
        timings.append({"run": run_seed, "seconds": round(seconds, 3)})
        metrics = {k: float(v) for k, v in result.items() if isinstance(v, (int, float)) and v is not None}
        tracker.log_metrics({**metrics, "seconds": seconds}, step=run_seed)
    atomic_write_bytes(outputs["history"], buf.getvalue().encode())
    write_json(outputs["results"], results)
    write_json(outputs["timings"], timings)
