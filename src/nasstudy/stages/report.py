"""Report stage: every result of the study in one summary with replicate statistics, paired tests
against random search, ranking quality, the papers' claims, figures and an HTML page.

The work lives in nasstudy.report_tables (reading, aggregation), report_stats (statistics),
report_claims (comparisons, claims), report_plots, report_markdown and report_transfer; this module
wires them together. It only reads the small CSV/JSON files the other stages write and never fails
on a missing piece: a job that did not run shows as a blank cell. Rows keep the params' order of
spaces and methods (`order` in the stage params, from rules/report.smk).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from nasstudy import report_claims, report_plots, report_transfer
from nasstudy import report_markdown as md
from nasstudy import report_stats as st
from nasstudy import report_tables as tb
from nasstudy.tracking import Tracker
from nasstudy.utils import atomic_write_bytes, make_rng, read_json, write_json

parse_path = tb.parse_path  # the artifact-path parser, used by tests and other readers


def orders(params: dict) -> dict[str, list[str] | None]:
    """Spaces, methods, evolution methods and op pool in params order (rules/report.smk passes them as
    `order`; a params dict with the study's own sections works too)."""
    o = params.get("order") or {}
    return {
        "spaces": o.get("spaces") or params.get("search", {}).get("spaces"),
        "methods": o.get("methods") or params.get("search", {}).get("methods"),
        "evolution": o.get("evolution") or params.get("evolution", {}).get("methods"),
        "pool": o.get("pool") or params.get("space", {}).get("pool"),
    }


def run(
    inputs: dict[str, list[Path]],
    outputs: dict[str, Path],
    params: dict,
    wildcards: dict[str, str],
    tracker: Tracker,
) -> None:
    """Write summary.csv/.md/.html/.json, replicates.csv, report.json and the four figures; log the numbers."""
    out = {k: Path(v) for k, v in outputs.items()}
    o = orders(params)
    reps = tb.load_replicates(inputs, o["spaces"], o["methods"])
    randoms = {parse_path(p)["space"]: pd.read_csv(p) for p in tb.paths(inputs, "random_archs")}
    histories = {}
    for p in tb.paths(inputs, "search_history"):
        info = parse_path(p)
        histories[(info["space"], info["method"], info["rep"])] = pd.read_csv(p).sort_values("query")
    ranking_data = tb.load_ranking(inputs)
    spaces = tb.order(set(reps["space"]) | set(randoms) | set(ranking_data), o["spaces"])
    methods = tb.order(set(reps["method"]), o["methods"])
    evolved = [
        s for s in spaces if s != "initial" and "initial" in spaces and (o["evolution"] is None or s in o["evolution"])
    ]

    cells = tb.aggregate(reps)
    comparisons = report_claims.vs_random(reps, spaces, methods)
    ranks = st.average_ranks(reps, "test_acc", methods, ["space", "rep"])
    evolution = report_claims.evolved_vs_initial(reps, evolved)
    ranking = {
        s: st.ranking_quality(
            ranking_data[s]["supernet_acc"],
            ranking_data[s]["test_acc"],
            make_rng(int(params.get("seed", 0)), "report", "ranking", s),
        )
        for s in spaces
        if s in ranking_data
    }
    winners_df = reps[~reps["method"].isin(report_plots.EXCLUDED)]
    winners = st.correlation(winners_df["supernet_acc"], winners_df["test_acc"])
    claims = report_claims.claims(reps, methods, evolved)
    spread = tb.random_spread({s: randoms[s] for s in spaces if s in randoms})
    fronts = tb.front_summary(inputs)
    ops, gens, active, front = tb.op_counts(inputs, o["pool"])
    jobs = [(parse_path(p), read_json(p)) for p in tb.paths(inputs, "transfer_metrics")]
    per_class = report_transfer.per_class_tables(jobs, [(c["space"], c["method"]) for c in cells])
    examples = [parse_path(p) for p in tb.paths(inputs, "transfer_examples")]

    summary = pd.DataFrame(cells, columns=tb.summary_columns())
    atomic_write_bytes(out["summary_csv"], summary.to_csv(index=False, float_format="%.6g").encode())
    if "replicates_csv" in out:
        atomic_write_bytes(out["replicates_csv"], reps.to_csv(index=False, float_format="%.6g").encode())
    md.write_markdown(
        out["summary_md"],
        [
            md.main_table(cells),
            md.comparison_lines(comparisons, evolution, ranks),
            md.ranking_lines(ranking, winners),
            md.claim_lines(claims),
            md.figure_lines(spread, fronts, report_transfer.example_lines(examples)),
            report_transfer.table_lines(per_class),
        ],
    )
    if "summary_html" in out:
        md.write_html(out["summary_html"], out["summary_md"].read_text(), f"NAS study {params.get('study', '')}")
    flat = tb.flat_summary(cells, ranking, comparisons)
    if "summary_json" in out:
        write_json(out["summary_json"], flat)
    report: dict[str, Any] = {
        "study": params.get("study"),
        "rows": cells,
        "replicates": reps.astype(object).where(reps.notna(), None).to_dict("records"),
        "vs_random": comparisons,
        "average_rank": ranks,
        "evolved_vs_initial": evolution,
        "ranking": ranking,
        "kendall_tau": winners | {"sample": "search winners, RelativeNAS excluded (selection-biased)"},
        "claims": claims,
        "random_archs": spread,
        "evolution": fronts,
        "op_active": {op: dict(zip(gens, active[i].tolist())) for i, op in enumerate(ops)},
        "transfer_per_class": per_class,
    }
    write_json(out["report_json"], report)
    report_plots.plot_pareto(out["pareto_plot"], randoms, histories, spaces, methods)
    report_plots.plot_search(out["search_plot"], histories, spaces, methods)
    report_plots.plot_ops(out["ops_plot"], ops, gens, active, front)
    title = report_plots.correlation_title(ranking, winners)
    report_plots.plot_correlation(out["correlation_plot"], reps, ranking_data, spaces, title)

    tracker.log_metrics(flat)
    tracker.log_metric("winners/kendall_n", winners["n"])
    if winners["tau"] is not None:
        tracker.log_metrics({"winners/kendall_tau": winners["tau"], "winners/kendall_p": winners["p_value"]})
    for name in (
        "summary_md",
        "summary_html",
        "summary_json",
        "report_json",
        "pareto_plot",
        "search_plot",
        "ops_plot",
        "correlation_plot",
    ):
        if name in out:
            tracker.log_artifact(out[name])
