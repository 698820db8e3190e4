"""Rule `bench_space_summary` (workflow/bench/space_nb201.smk): per method, how many seeds'
subspaces came within the tolerance of the optimum.

Misses are counted, not dropped: generations and queries to get there are given over the seeds
that did. The oracle best-in-subspace test accuracy per generation is summarised as mean and
spread over seeds, and plotted (mean line, 25-75% band). Two numbers say whether a method holds
what it found: the final elite's reported value (the best arch it queried, by the search metric)
and the drift, peak minus final oracle best per seed (the oracle can still drop: it may lose an
arch nobody queried).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from nasstudy.benchmarks import finish_curve_plot
from nasstudy.tracking import Tracker
from nasstudy.utils import atomic_write_bytes, read_json, write_json


def _stat(values: list[float], fn) -> float | None:
    return round(float(fn(values)), 2) if values else None


def read_curve(path: Path) -> np.ndarray:
    """best_test per generation (generation 0 = the initial subspace) of one history.csv."""
    with open(path, newline="") as f:
        return np.array([float(r["best_test"]) for r in csv.DictReader(f)])


def summarise(results: list[dict], curves: list[np.ndarray]) -> list[dict]:
    """One row per method, in first-seen order; `best_test_mean`/`_std` are per generation."""
    by: dict[str, list[tuple[dict, np.ndarray]]] = {}
    for r, c in zip(results, curves):
        by.setdefault(r["method"], []).append((r, c))
    rows = []
    for method, runs in by.items():
        hit = [r for r, _ in runs if r["reached_at_generation"] is not None]
        gens = [r["reached_at_generation"] for r in hit]
        queries = [r["queries_to_reach"] for r in hit]
        c = np.vstack([c for _, c in runs])
        elites = [r["final_elite_test"] for r, _ in runs if "final_elite_test" in r]  # absent in older results
        rows.append({
            "method": method,
            "runs": len(runs),
            "reached": len(hit),
            "generations_mean": _stat(gens, np.mean),
            "generations_median": _stat(gens, np.median),
            "queries_mean": _stat(queries, np.mean),
            "queries_median": _stat(queries, np.median),
            "final_best_test_mean": _stat([r["final_best_test"] for r, _ in runs], np.mean),
            "final_elite_test_mean": _stat(elites, np.mean),
            "drift_mean": _stat([float(curve.max() - curve[-1]) for _, curve in runs], np.mean),
            "queries_total_mean": _stat([r["queries_total"] for r, _ in runs], np.mean),
            "best_test_mean": [round(float(v), 3) for v in c.mean(axis=0)],
            "best_test_std": [round(float(v), 3) for v in c.std(axis=0)],
        })  # fmt: skip
    return rows


def curves_plot(path: Path, curves: dict[str, list[np.ndarray]], optimum: float, tol: float) -> None:
    """Best-in-subspace test acc vs generation: mean and 25-75% band per method (no timestamps: same bytes)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5), dpi=100)
    ax = fig.add_subplot()
    for method, cs in curves.items():
        c = np.vstack(cs)
        gens = np.arange(c.shape[1])
        ax.plot(gens, c.mean(axis=0), label=f"{method} (n={len(cs)})")
        ax.fill_between(gens, np.percentile(c, 25, axis=0), np.percentile(c, 75, axis=0), alpha=0.2)
    ax.axhline(optimum - tol, color="grey", linestyle="--", linewidth=1, label=f"optimum - {tol:g}")
    finish_curve_plot(
        fig, ax, "generation", "best test acc in the subspace (mean, 25-75%)", "Space evolution on the table", path
    )


def markdown(rows: list[dict], params: dict, optimum: float, tol: float) -> str:
    """The summary table; every number is over the runs named in its column."""

    def fmt(v) -> str:
        return "—" if v is None else f"{v:g}"

    lines = [
        f"# Space evolution on a table: {params['study']}",
        "",
        f"Table `{params['table']}`; methods see `{params['search_metric']}`; the oracle best "
        f"`{params['report_metric']}` over all archs of the subspace is reported. Reached = seeds whose subspace "
        f"came within {tol:g} of the optimum {optimum:g} within {params['generations']} generations; generations and "
        "queries (distinct table queries, cumulative) are over those seeds. Final elite = the reported value of the "
        "best arch by the search metric the method queried (kept in its subspace); drift = peak minus final oracle "
        "best.",
        "",
        "| method | runs | reached | gens mean | gens median | queries mean | queries median "
        "| final best test (mean) | final elite test (mean) | drift (mean) | queries total (mean) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cells = [r["method"], str(r["runs"]), f"{r['reached']}/{r['runs']}", r["generations_mean"],
                 r["generations_median"], r["queries_mean"], r["queries_median"], r["final_best_test_mean"],
                 r["final_elite_test_mean"], r["drift_mean"], r["queries_total_mean"]]  # fmt: skip
        lines.append("| " + " | ".join(c if isinstance(c, str) else fmt(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def run(inputs: dict[str, Path], outputs: dict[str, Path], params: dict, wildcards: dict[str, str],
        tracker: Tracker) -> None:  # fmt: skip
    results = [read_json(p) for p in inputs["results"]]
    curves = [read_curve(Path(p)) for p in inputs["histories"]]
    rows = summarise(results, curves)
    optimum, tol = float(results[0]["optimum"]), float(results[0]["tolerance"])
    flat = [{k: v for k, v in r.items() if not isinstance(v, list)} for r in rows]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(flat[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    atomic_write_bytes(outputs["summary_csv"], buf.getvalue().encode())
    atomic_write_bytes(outputs["summary_md"], markdown(rows, params, optimum, tol).encode())
    write_json(outputs["summary_json"], rows)
    by: dict[str, list[np.ndarray]] = {}
    for r, c in zip(results, curves):
        by.setdefault(r["method"], []).append(c)
    curves_plot(outputs["curves_plot"], by, optimum, tol)
    for r in rows:
        tracker.log_metrics({f"{r['method']}/reached": r["reached"], f"{r['method']}/runs": r["runs"]})
    tracker.log_artifact(outputs["summary_md"])
    tracker.log_artifact(outputs["curves_plot"])
