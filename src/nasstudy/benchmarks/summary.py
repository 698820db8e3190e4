"""Rule `bench_summary` (workflow/bench/nb201.smk): per method, how many queries until the best
arch is found, and what it picks.

Runs that never find the target within their budget are counted and shown, not dropped: the mean
and median are given over the runs that found it, and a lower bound of the mean counting every
miss as budget + 1 queries. A miss is either a budget miss or a stalled run (the method proposed
only archs it had seen; `stalled`, with the mean queries it had spent when it stalled). For methods
with a predictor the authors' count (queried or predicted top-1) is given beside the plain one.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from nasstudy.benchmarks import finish_curve_plot
from nasstudy.tracking import Tracker
from nasstudy.utils import atomic_write_bytes, read_json, write_json


def stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "median": None, "std": None}
    a = np.asarray(values, dtype=float)
    return {"mean": round(float(a.mean()), 2), "median": round(float(np.median(a)), 2),
            "std": round(float(a.std(ddof=1)), 2) if len(a) > 1 else 0.0}  # fmt: skip


def summarise(results: list[dict], timings: list[dict], budgets: list[int]) -> list[dict]:
    """One row per method."""
    by_method: dict[str, list[tuple[dict, dict]]] = {}
    for r, t in zip(results, timings):
        by_method.setdefault(r["method"], []).append((r, t))
    rows = []
    for method, runs in by_method.items():
        row: dict = {"method": method, "runs": len(runs)}
        stalled = [r["queries"] for r, _ in runs if r.get("stop") == "stalled" and r["found_at"] is None]
        row["stalled"], row["stalled_queries_mean"] = len(stalled), stats(stalled)["mean"]
        for key, label in (("found_at", ""), ("found_at_or_predicted", "_or_predicted")):
            found = [r[key] for r, _ in runs if r[key] is not None]
            row[f"found{label}"] = len(found)
            row[f"missed{label}"] = len(runs) - len(found)
            for k, v in stats(found).items():
                row[f"queries{label}_{k}"] = v
            bound = [r[key] if r[key] is not None else r["budget"] + 1 for r, _ in runs]
            row[f"queries{label}_mean_with_misses"] = stats(bound)["mean"]
        for b in budgets:
            picks = [r["pick_report_acc_at"].get(str(b)) for r, _ in runs]
            picks = [p for p in picks if p is not None]
            s = stats(picks)
            row[f"report_acc_at_{b}"], row[f"report_acc_at_{b}_std"] = s["mean"], s["std"]
        row["budget"] = max(r["budget"] for r, _ in runs)
        row["seconds_mean"] = round(float(np.mean([t["seconds"] for _, t in runs])), 3)
        row["seconds_total"] = round(float(np.sum([t["seconds"] for _, t in runs])), 1)
        rows.append(row)
    return rows


def read_histories(jobs: list[tuple[str, Path]]) -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]:
    """(method, run) -> (queries, report metric of the pick), from each job's (method, history file)."""
    out: dict[tuple[str, int], tuple[list, list]] = {}
    for method, p in jobs:
        with open(p, newline="") as f:
            for row in csv.DictReader(f):
                q, pick = out.setdefault((method, int(row["run"])), ([], []))
                q.append(int(row["query"]))
                pick.append(float(row["pick_report_acc"]))
    return {k: (np.asarray(q), np.asarray(p, dtype=float)) for k, (q, p) in out.items()}


def curves_plot(path: Path, histories: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]], max_query: int) -> None:
    """Best-so-far report metric of the picked arch vs queries: median and 25-75% band per method."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5), dpi=100)
    ax = fig.add_subplot()
    grid = np.unique(np.geomspace(1, max_query, 200).astype(int))
    for method in sorted({m for m, _ in histories}):
        curves = []
        for (m, _), (q, pick) in sorted(histories.items()):
            if m != method or len(q) == 0:
                continue
            idx = np.searchsorted(q, grid, side="right") - 1
            curves.append(np.where(idx >= 0, pick[np.clip(idx, 0, None)], np.nan))
        if not curves:
            continue
        c = np.vstack(curves)
        with np.errstate(all="ignore"):
            med, lo, hi = (np.nanpercentile(c, p, axis=0) for p in (50, 25, 75))
        ax.plot(grid, med, label=f"{method} (n={len(curves)})")
        ax.fill_between(grid, lo, hi, alpha=0.2)
    ax.set_xscale("log")
    finish_curve_plot(
        fig, ax, "queries", "report metric of the picked arch (median, 25-75%)", "Best-so-far on the table", path
    )


def markdown(rows: list[dict], budgets: list[int], params: dict) -> str:
    def fmt(v) -> str:
        return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:g}"

    lines = [
        f"# Tabular benchmark: {params['study']}",
        "",
        f"Table `{params['table']}`; methods search on `{params['search_metric']}`, the picked arch is reported "
        f"on `{params['report_metric']}`. Queries until an arch with the best `{params['search_metric']}` is "
        "queried: mean / median / std over the runs that found it; `found` = runs that found it within the "
        "budget; `mean with misses` counts each miss as budget + 1 (a lower bound). `or predicted`: found when "
        "queried or when the predictor's top-1 (not charged; WeakNAS's count). `stalled`: misses where the "
        "method stopped proposing unseen archs (mean queries spent), apart from budget misses.",
        "",
        "| method | runs | found | stalled (queries) | mean | median | std | mean with misses | found (or predicted) "
        "| mean (or predicted) | median (or predicted) | " + " | ".join(f"acc@{b}" for b in budgets) + " | s/run |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(budgets) + "---:|",
    ]
    for r in rows:
        stalled = f"{r['stalled']} ({fmt(r['stalled_queries_mean'])})" if r["stalled"] else "0"
        cells = [r["method"], r["runs"], f"{r['found']}/{r['runs']}", stalled, r["queries_mean"], r["queries_median"],
                 r["queries_std"], r["queries_mean_with_misses"], f"{r['found_or_predicted']}/{r['runs']}",
                 r["queries_or_predicted_mean"], r["queries_or_predicted_median"]]  # fmt: skip
        cells += [r[f"report_acc_at_{b}"] for b in budgets] + [r["seconds_mean"]]
        lines.append("| " + " | ".join(c if isinstance(c, str) else fmt(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def run(inputs: dict[str, Path], outputs: dict[str, Path], params: dict, wildcards: dict[str, str],
        tracker: Tracker) -> None:  # fmt: skip
    per_job = [read_json(p) for p in inputs["results"]]  # a list of runs per job
    results = [r for job in per_job for r in job]
    timings = [t for p in inputs["timings"] for t in read_json(p)]
    budgets = list(params["budgets"])
    rows = summarise(results, timings, budgets)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(outputs["summary_csv"], buf.getvalue().encode())
    atomic_write_bytes(outputs["summary_md"], markdown(rows, budgets, params).encode())
    write_json(outputs["summary_json"], rows)
    jobs = [(job[0]["method"], Path(h)) for job, h in zip(per_job, inputs["histories"]) if job]
    curves_plot(outputs["curves_plot"], read_histories(jobs), max(max(budgets), 1))
    for r in rows:
        tracker.log_metrics({f"{r['method']}/found": r["found"], f"{r['method']}/runs": r["runs"]})
        if r["queries_mean"] is not None:
            tracker.log_metric(f"{r['method']}/queries_mean", r["queries_mean"])
    tracker.log_artifact(outputs["summary_md"])
    tracker.log_artifact(outputs["curves_plot"])
