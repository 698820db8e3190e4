"""Report stage on fake results trees written in the contract's file formats: 3 spaces x 5 methods x
3 replicates with a ranking sample per space, and the older one-replicate layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from nasstudy import report_tables as tb
from nasstudy.stages import report
from nasstudy.tracking import MemoryTracker

SPACES = ["initial", "nse", "autospace"]  # params order, not alphabetical
METHODS = ["random", "rea", "relativenas", "ganas", "weaknas"]
REPS = 3
OPS = ["mb3_e3", "mb5_e3", "mb3_e1", "mb3_e6", "mb5_e6", "mb7_e3"]
POOL = ["mb5_e6", "mb3_e3", "mb7_e3", "mb3_e6", "mb5_e3", "mb3_e1"]  # op rows must follow this
TRANSFER = ["random", "weaknas"]
# Test acc = space base + method effect + replicate noise: nse is 3 points above initial in every pair,
# autospace is initial with a +-1 wobble; relativenas beats random in every pair, ganas does not.
BASE = {"initial": 40.0, "nse": 43.0, "autospace": 40.0}
EFFECT = {"random": 0.0, "rea": 1.0, "relativenas": 2.0, "ganas": 0.0, "weaknas": 1.5}
NOISE = [0.0, 0.4, -0.3]
WOBBLE = {"initial": 0.0, "nse": 0.0, "autospace": 1.0}
GANAS_NOISE = [0.5, -0.6, 0.2]
# Queries to best: weaknas always finds its best earlier than rea.
TO_BEST = {"random": 6, "rea": 8, "relativenas": 7, "ganas": 5, "weaknas": 3}


def true_acc(space: str, method: str, rep: int) -> float:
    wobble = WOBBLE[space] * (1 if (METHODS.index(method) + rep) % 2 else -1)
    extra = GANAS_NOISE[rep] if method == "ganas" else 0.0
    return round(BASE[space] + EFFECT[method] + NOISE[rep] + wobble + extra, 2)


def supernet_acc(space: str, method: str, rep: int) -> float:
    return round(30.0 + 0.5 * true_acc(space, method, rep) + rep, 2)


def _json(path: Path, obj: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def _csv(path: Path, df: pd.DataFrame) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return path


def _archs(rng: np.random.Generator, n: int) -> pd.DataFrame:
    flops = rng.uniform(2e6, 9e6, n).round()
    acc = 30 + 40 * (flops - 2e6) / 7e6 + rng.normal(0, 3, n)
    return pd.DataFrame(
        {"arch": [f"a{i}" for i in range(n)], "flops": flops, "params": flops / 20, "acc": acc, "loss": 1.0}
    )


INPUT_NAMES = [
    "random_archs",
    "fronts",
    "op_stats",
    "search_best",
    "search_history",
    "retrain_metrics",
    "retrain_timing",
    "transfer_metrics",
    "transfer_examples",
    "ranking_sample",
    "ranking_metrics",
]


def make_tree(root: Path, reps: int = REPS, layout: str = "rep", transfer: bool = True, ranking: int = 20) -> dict:
    """Result files as the stages write them; layout "rep": {stage}/{space}/{method}/rep{r}/, "flat": the
    single-seed layout {stage}/{space}/{method}/ (read as replicate 0)."""
    rng = np.random.default_rng(0)
    inp: dict[str, list[Path]] = {k: [] for k in INPUT_NAMES}
    for space in SPACES:
        inp["random_archs"].append(_csv(root / "supernet" / space / "random_archs.csv", _archs(rng, 50)))
    for g in (1, 2):
        df = _archs(rng, 20)
        df["on_front"] = (np.arange(20) % 4 == 0).astype(int)
        inp["fronts"].append(_csv(root / "space" / "nse" / f"gen{g}" / "front.csv", df))
        rows = []
        for pos in range(3):
            # gen 1 drops mb3_e1 and adds mb3_e6; gen 2 drops mb5_e3 and adds mb5_e6
            old, new = (OPS[:4], OPS[:2] + OPS[3:5]) if g == 1 else (OPS[:2] + OPS[3:5], [OPS[0]] + OPS[3:6])
            for op in old:
                status = "kept" if op in new else "dropped"
                rows.append([pos, op, 0.1, 0.5, 2 if status == "kept" else 0, status])
            for op in set(new) - set(old):
                rows.append([pos, op, 0.0, 0.5, 0, "added"])
        stats_df = pd.DataFrame(rows, columns=["position", "op", "alpha", "prob", "front_count", "status"])
        inp["op_stats"].append(_csv(root / "space" / "nse" / f"gen{g}" / "op_stats.csv", stats_df))
    for space in SPACES:
        for method in METHODS:
            for rep in range(reps):
                sub = f"rep{rep}" if layout == "rep" else ""
                sacc, tacc, q = supernet_acc(space, method, rep), true_acc(space, method, rep), TO_BEST[method]
                d = root / "search" / space / method / sub
                h = _archs(rng, 10)
                h["acc"] = np.minimum(h["acc"], sacc - 1)
                h.loc[q - 1, "acc"] = sacc
                h.insert(0, "query", np.arange(1, 11))
                h["best_acc"] = h["acc"].cummax()
                inp["search_history"].append(_csv(d / "history.csv", h))
                best = {
                    "arch": f"a{q - 1}",
                    "ops": [["mb3_e3"]] * 7,
                    "supernet_acc": sacc,
                    "flops": 5e6,
                    "params": 250e3,
                    "queries": 10,
                    "queries_to_best": q,
                    "space": space,
                    "method": method,
                }
                inp["search_best"].append(_json(d / "best.json", best))
                d = root / "retrain" / space / method / sub
                m = {
                    "test_acc": tacc,
                    "val_acc": tacc,
                    "params": 251_000,
                    "flops": 5_100_000 + 100_000 * rep,
                    "supernet_acc": sacc,
                    "arch": f"a{q - 1}",
                }
                inp["retrain_metrics"].append(_json(d / "metrics.json", m))
                inp["retrain_timing"].append(
                    _json(d / "timing.json", {"latency_ms": 1.5 + 0.1 * rep, "train_seconds": 9})
                )
            if transfer and method in TRANSFER:
                t, tacc = root / "transfer", true_acc(space, method, 0)
                # detection follows classification exactly; segmentation runs against it
                ap = {"car": tacc / 5, "person": tacc / 10} | (
                    {} if (space, method) == ("nse", "random") else {"bus": 1.5}
                )
                det = {"map": tacc / 4, "map_50": 1, "map_75": 1, "per_class": ap}
                inp["transfer_metrics"].append(_json(t / "detection" / space / method / "metrics.json", det))
                seg = {"miou": 100 - tacc, "pixel_acc": 90, "per_class": {"background": 90.0, "car": tacc / 3}}
                inp["transfer_metrics"].append(_json(t / "segmentation" / space / method / "metrics.json", seg))
                for task in ("detection", "segmentation"):
                    png = t / task / space / method / "examples.png"
                    png.write_bytes(b"\x89PNG\r\n\x1a\n")
                    inp["transfer_examples"].append(png)
        if ranking:
            x = np.linspace(30, 60, ranking)
            y = x * 0.8 + rng.normal(0, 4, ranking)
            sample = pd.DataFrame(
                {
                    "index": range(ranking),
                    "arch": [f"s{i}" for i in range(ranking)],
                    "ops": "[]",
                    "supernet_acc": x,
                    "supernet_loss": 1.0,
                    "flops": 4e6,
                    "params": 2e5,
                }
            )
            inp["ranking_sample"].append(_csv(root / "ranking" / space / "sample.csv", sample))
            for i in range(ranking):
                m = {"test_acc": float(y[i]), "val_acc": 0, "params": 1, "flops": 1, "supernet_acc": x[i], "arch": "s"}
                inp["ranking_metrics"].append(_json(root / "ranking" / space / f"arch{i}" / "metrics.json", m))
    return inp


OUT_NAMES = {
    "summary_csv": "summary.csv",
    "summary_md": "summary.md",
    "summary_html": "summary.html",
    "summary_json": "summary.json",
    "replicates_csv": "replicates.csv",
    "report_json": "report.json",
    "pareto_plot": "pareto.png",
    "search_plot": "search.png",
    "ops_plot": "ops.png",
    "correlation_plot": "correlation.png",
}
PARAMS = {
    "seed": 0,
    "study": "t",
    "device": "cpu",
    "threads": 1,
    "order": {"spaces": SPACES, "methods": METHODS, "evolution": ["nse", "autospace"], "pool": POOL},
}


def _run(tmp_path: Path, **tree) -> tuple[dict[str, Path], MemoryTracker]:
    inp = make_tree(tmp_path / "results" / "t", **tree)
    out = {k: tmp_path / "results" / "t" / "report" / v for k, v in OUT_NAMES.items()}
    tracker = MemoryTracker()
    report.run(inp, out, PARAMS, {}, tracker)
    return out, tracker


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], MemoryTracker]:
    return _run(tmp_path_factory.mktemp("full"))


def test_parse_path() -> None:
    assert report.parse_path("results/s/transfer/detection/nse/rea/metrics.json") == {
        "file": "metrics.json",
        "stage": "transfer",
        "task": "detection",
        "space": "nse",
        "method": "rea",
    }
    assert report.parse_path("/x/results/s/search/nse/rea/rep2/history.csv") == {
        "file": "history.csv",
        "stage": "search",
        "space": "nse",
        "method": "rea",
        "rep": 2,
    }
    assert report.parse_path("results/s/retrain/nse/rea/metrics.json")["rep"] == 0  # single-seed layout
    assert report.parse_path("results/s/ranking/nse/arch7/metrics.json") == {
        "file": "metrics.json",
        "stage": "ranking",
        "space": "nse",
        "index": 7,
    }
    assert report.parse_path("results/s/ranking/autospace/sample.csv")["space"] == "autospace"
    assert report.parse_path("/x/results/s/space/nse/gen3/op_stats.csv")["gen"] == 3
    assert report.parse_path("/x/results/s/space/nse/gen3/op_stats.csv")["evolution"] == "nse"
    assert report.parse_path("results/s/space/gen1/front.csv")["evolution"] == ""
    assert report.parse_path("results/s/supernet/initial/random_archs.csv")["space"] == "initial"
    with pytest.raises(ValueError):
        report.parse_path("results/s/other.csv")


def test_summary_keeps_params_order_and_gives_t_intervals(full) -> None:
    out, _ = full
    for p in out.values():
        assert p.exists() and p.stat().st_size > 0
    df = pd.read_csv(out["summary_csv"])
    assert list(zip(df["space"], df["method"])) == [(s, m) for s in SPACES for m in METHODS]
    r = df.set_index(["space", "method"]).loc[("nse", "weaknas")]
    values = [true_acc("nse", "weaknas", k) for k in range(REPS)]
    lo, hi = stats.t.interval(0.95, REPS - 1, loc=np.mean(values), scale=stats.sem(values))
    assert r["n"] == 3 and r["test_acc_n"] == 3
    assert r["test_acc_mean"] == pytest.approx(np.mean(values))
    assert r["test_acc_std"] == pytest.approx(np.std(values, ddof=1), rel=1e-5)
    assert (r["test_acc_ci_low"], r["test_acc_ci_high"]) == pytest.approx((lo, hi), rel=1e-5)
    assert r["flops_m_mean"] == pytest.approx(5.2) and r["latency_ms_mean"] == pytest.approx(1.6)
    assert r["queries_to_best_mean"] == 3 and r["queries_to_best_std"] == 0
    assert r["queries_to_best_ci_low"] == r["queries_to_best_ci_high"] == 3  # no spread: a zero-width interval
    assert r["det_map_n"] == 1 and np.isnan(r["det_map_ci_low"])  # transfer: replicate 0 only, no interval
    reps = pd.read_csv(out["replicates_csv"])
    assert len(reps) == 45 and list(reps["rep"][:3]) == [0, 1, 2]
    assert reps.iloc[0]["space"] == "initial" and reps.iloc[0]["method"] == "random"


def test_paired_tests_ranks_and_claims(full) -> None:
    out, _ = full
    rep = json.loads(out["report_json"].read_text())
    vs = {(c["space"], c["method"]): c for c in rep["vs_random"]}
    assert len(vs) == 12 and ("initial", "random") not in vs
    rel = vs[("initial", "relativenas")]["test"]
    assert rel["n"] == 3 and rel["outcome"] == "inconclusive" and rel["rank_biserial"] == 1.0
    assert rel["mean_diff"] == pytest.approx(2.0) and rel["rel_pct"] == pytest.approx(200 / 40.0333, rel=1e-3)
    assert "cannot reach p < 0.05" in vs[("initial", "relativenas")]["words"]
    # average rank over 9 blocks (space x replicate); in initial relativenas is best in every block, and
    # random is last but in replicate 1, where ganas falls below it
    ranks = rep["average_rank"]
    assert ranks["n_blocks"] == 9 and ranks["per_space"]["initial"]["relativenas"] == 1.0
    assert ranks["per_space"]["initial"]["random"] == pytest.approx(14 / 3)
    assert set(ranks["per_space"]) == set(SPACES)  # report.json sorts keys; summary.md keeps params order
    assert "| Method | all spaces | initial | nse | autospace |" in out["summary_md"].read_text()
    evo = {e["space"]: e["test"] for e in rep["evolved_vs_initial"]}
    x = [true_acc("nse", m, k) for m in METHODS for k in range(REPS)]
    y = [true_acc("initial", m, k) for m in METHODS for k in range(REPS)]
    assert evo["nse"]["n"] == 15 and evo["nse"]["p_value"] == pytest.approx(stats.wilcoxon(x, y).pvalue)
    assert evo["nse"]["outcome"] == "better" and evo["autospace"]["outcome"] == "noise"
    verdicts = {c["claim"]: c["verdict"] for c in rep["claims"]}
    assert verdicts == {
        "Space evolution (nse) improves the search space": "supported",
        "Space evolution (autospace) improves the search space": "not supported",
        "WeakNAS needs fewer queries than REA to reach its best arch": "supported",
        "RelativeNAS beats random search at equal budget": "supported",
        "GA-NAS beats random search at equal budget": "not supported",
        "Transfer ranks follow classification ranks (detection)": "supported",
        "Transfer ranks follow classification ranks (segmentation)": "not supported",
    }
    assert {c["n"] for c in rep["claims"] if "Transfer" in c["claim"]} == {6}


def test_ranking_quality_from_the_sample_and_winners_apart(full) -> None:
    out, tracker = full
    rep = json.loads(out["report_json"].read_text())
    assert set(rep["ranking"]) == set(SPACES)
    assert [
        ln.split(" | ")[0]
        for ln in out["summary_md"].read_text().splitlines()
        if ln.startswith("| ") and " | 20 | " in ln
    ] == [f"| {s}" for s in SPACES]
    r = rep["ranking"]["nse"]
    inp = make_tree(out["summary_csv"].parent.parent / "again")  # same seed: the same sample
    sample = pd.read_csv([p for p in inp["ranking_sample"] if p.parent.name == "nse"][0])
    y = [json.loads(p.read_text())["test_acc"] for p in inp["ranking_metrics"] if p.parent.parent.name == "nse"]
    assert r["n"] == 20 and r["k"] == 5
    assert r["kendall_tau"] == pytest.approx(stats.kendalltau(sample["supernet_acc"], y).statistic)
    assert r["spearman_rho"] == pytest.approx(stats.spearmanr(sample["supernet_acc"], y).statistic)
    assert r["kendall_tau_ci_low"] <= r["kendall_tau"] <= r["kendall_tau_ci_high"]
    assert 0 <= r["precision_at_k_ci_low"] <= r["precision_at_k_ci_high"] <= 1
    # winners: every search except RelativeNAS's (its supernet acc is not the space's supernet's)
    assert rep["kendall_tau"]["n"] == 3 * 4 * REPS
    summary = json.loads(out["summary_json"].read_text())
    assert summary["nse/ranking/kendall_tau"] == round(r["kendall_tau"], 4)
    assert summary["initial/random/test_acc_mean"] == round(
        np.mean([true_acc("initial", "random", k) for k in range(3)]), 4
    )
    assert all(isinstance(v, float | int) for v in summary.values())
    assert tracker.last("nse/ranking/kendall_tau") == pytest.approx(r["kendall_tau"], abs=1e-4)
    assert tracker.last("winners/kendall_n") == 36


def test_markdown_html_and_op_order(full) -> None:
    out, tracker = full
    md = out["summary_md"].read_text()
    assert "| nse | weaknas | 3 |" in md and "[" in md.split("| nse | weaknas | 3 |")[1].splitlines()[0]
    assert "## Against random search" in md and "## Average rank" in md and "## Claims of the papers" in md
    assert "- relativenas vs random in initial: +2.00 pp" in md
    assert "Search winners (selection-biased, RelativeNAS excluded)" in md
    assert "One replicate per cell" not in md
    html = out["summary_html"].read_text()
    assert html.startswith("<!DOCTYPE html>") and "<table>" in html and "<h2>Claims of the papers, tested</h2>" in html
    ops = tb.op_counts(make_tree(out["summary_csv"].parent.parent / "ops"), report.orders(PARAMS)["pool"])[0]
    assert ops == [op for op in POOL if op in OPS]  # the params' pool order, not alphabetical
    for name in ("pareto_plot", "search_plot", "ops_plot", "correlation_plot"):
        assert out[name].read_bytes()[:4] == b"\x89PNG" and out[name] in tracker.artifacts


def test_one_replicate_study_still_reports(tmp_path: Path) -> None:
    """The single-seed layout (no rep folders): every cell n=1, no interval, and the text says why."""
    out, _ = _run(tmp_path, reps=1, layout="flat", ranking=0)
    df = pd.read_csv(out["summary_csv"])
    assert len(df) == 15 and (df["n"] == 1).all()
    assert df["test_acc_mean"].notna().all() and df["test_acc_ci_low"].isna().all() and df["test_acc_std"].isna().all()
    md = out["summary_md"].read_text()
    assert "One replicate per cell: no confidence intervals" in md
    assert "No ranking sample in this study" in md
    rep = json.loads(out["report_json"].read_text())
    assert {c["test"]["outcome"] for c in rep["vs_random"]} == {"inconclusive"}
    assert rep["average_rank"]["n_blocks"] == 3
    assert {c["verdict"] for c in rep["claims"] if "Space evolution" in c["claim"]} == {"inconclusive (n too small)"}


def test_report_without_transfer_is_deterministic(tmp_path: Path) -> None:
    out, _ = _run(tmp_path, transfer=False)
    df = pd.read_csv(out["summary_csv"])
    assert len(df) == 15 and df["det_map_mean"].isna().all() and df["seg_miou_mean"].isna().all()
    md = out["summary_md"].read_text()
    assert "Per-class" not in md and "examples.png" not in md and "Transfer ranks" not in md
    # same inputs, same bytes: PNGs carry no version stamp, the bootstrap is seeded from the study seed
    inp = make_tree(tmp_path / "results" / "t", transfer=False)
    out2 = {k: tmp_path / "again" / v for k, v in OUT_NAMES.items()}
    report.run(inp, out2, PARAMS, {}, MemoryTracker())
    for k in OUT_NAMES:
        assert out2[k].read_bytes() == out[k].read_bytes(), k


def test_report_empty(tmp_path: Path) -> None:
    out = {k: tmp_path / v for k, v in OUT_NAMES.items()}
    report.run({}, out, PARAMS, {}, MemoryTracker())
    assert pd.read_csv(out["summary_csv"]).empty
    rep = json.loads(out["report_json"].read_text())
    assert rep["kendall_tau"]["tau"] is None and rep["claims"] == [] and rep["vs_random"] == []
    assert all(p.stat().st_size > 0 for p in out.values())


def test_rows_follow_the_params_order_the_rule_passes(tmp_path: Path) -> None:
    """Without `order` (what rules/report.smk passed before) rows came out alphabetically."""
    inp = make_tree(tmp_path / "results" / "t", reps=1, ranking=0, transfer=False)
    out = {k: tmp_path / v for k, v in OUT_NAMES.items()}
    report.run(
        inp,
        out,
        {**PARAMS, "order": {"spaces": ["nse", "initial"], "methods": ["weaknas", "random"]}},
        {},
        MemoryTracker(),
    )
    df = pd.read_csv(out["summary_csv"])
    assert list(df["space"].unique()) == ["nse", "initial", "autospace"]  # unknown ones after, alphabetically
    assert list(df["method"].unique()) == ["weaknas", "random", "ganas", "rea", "relativenas"]


def test_op_counts_reads_nse_and_autospace_op_stats(tmp_path):
    """NSE's op_stats (status, front_count) and AutoSpace's (an `active` flag, no front) in one heatmap."""
    from nasstudy.report_tables import op_counts

    nse = tmp_path / "space" / "nse" / "gen1" / "op_stats.csv"
    auto = tmp_path / "space" / "autospace" / "gen1" / "op_stats.csv"
    for path in (nse, auto):
        path.parent.mkdir(parents=True)
    nse.write_text(
        "position,op,alpha,prob,front_count,status\n0,a,0.1,0.5,2,kept\n1,a,0.1,0.5,1,kept\n1,b,-1,0.2,0,dropped\n"
    )
    auto.write_text(
        "position,op,fitness,status,alpha,picks,active,parent\n0,a,0.0,reference,0,0,1,\n"
        "0,b,-2.0,dropped,0,0,0,\n1,c,0.3,new,0,0,1,a\n"
    )
    ops, gens, active, front = op_counts({"op_stats": [str(nse), str(auto)]}, ["a", "b", "c"])
    assert ops == ["a", "b", "c"] and gens == ["autospace gen 1", "nse gen 1"]
    assert active.tolist() == [[1, 2], [0, 0], [1, 0]] and front.tolist() == [[0, 3], [0, 0], [0, 0]]
