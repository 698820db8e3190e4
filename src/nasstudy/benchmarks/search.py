"""Rule `bench_search` (workflow/bench/nb201.smk): one search method, a few seeds one after another,
against a lookup table (NAS-Bench-201 style).

A job runs the seeds in `runs` (`seeds_per_job` of them from `first`): the search itself takes milliseconds to
seconds, so one job per seed would spend most of its time starting Python, torch and MLflow. Each
seed has its own random stream (study seed, method, seed number), so the results do not depend on
how the seeds are grouped into jobs.

Counts the queries until an arch with the best search-metric value is queried (ties count as
found) and, for methods with a predictor (WeakNAS), also until the predictor's top-1 is such an
arch, which the authors count as found without charging a query. A sequential method (REA,
RelativeNAS) is asked one arch at a time, so each proposal sees every result before it; the others
are asked `BATCH` at a time. A repeat is a free table lookup: told to the method, never charged.
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

from tqdm import tqdm

from nasstudy.evaluators import TableEvaluator
from nasstudy.methods import make_method
from nasstudy.spaces import make_space
from nasstudy.tracking import Tracker
from nasstudy.utils import atomic_write_bytes, make_rng, seed_torch, write_json

STAGE = "bench_search"  # the rule's name: every seed derives from it (the module moved, the seeds did not)
BATCH = 10  # archs per ask for a method that is not sequential
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

    rows, best_search, pick_report = [], float("-inf"), float("nan")
    found_at = found_pred_at = None
    asks, start = 0, time.perf_counter()
    has_predictor = hasattr(method, "predicted_best")
    ask_size = 1 if method.sequential else BATCH

    def done() -> bool:
        return found_at is not None and (found_pred_at is not None or not has_predictor)

    with tqdm(total=budget, desc=f"{method_name} #{run_seed}", file=sys.stderr, mininterval=5) as bar:
        while evaluator.queries < budget and not done() and not evaluator.stalled():
            archs = method.ask(min(ask_size, budget - evaluator.queries))
            asks += len(archs)
            metrics = []
            for arch in archs:
                before = evaluator.queries
                m = evaluator.evaluate(arch)
                metrics.append(m)
                if evaluator.queries == before:
                    continue  # a repeat: free, not a new query
                row = evaluator.rows[space.to_string(arch)]
                if m["acc"] > best_search:
                    best_search, pick_report = m["acc"], float(row[report])
                if found_at is None and tuple(arch) in goal:
                    found_at = evaluator.queries
                rows.append((evaluator.queries, space.to_string(arch), m["acc"], float(row[report]), best_search,
                             pick_report))  # fmt: skip
                bar.update(1)
            method.tell(archs, metrics)
            predicted = method.predicted_best() if has_predictor else None
            if found_pred_at is None and predicted is not None and tuple(predicted) in goal:
                found_pred_at = evaluator.queries
    stop = "found" if done() else "stalled" if evaluator.stalled() else "budget"
    seconds = time.perf_counter() - start
    found = [x for x in (found_at, found_pred_at) if x is not None]
    picks = {str(b): (rows[min(b, len(rows)) - 1][5] if rows else None) for b in params["budgets"]}
    result = {
        "method": method_name,
        "run": run_seed,
        "budget": budget,
        "queries": evaluator.queries,
        "asks": asks,
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
