"""Report stage on a small fake results tree written in the contract's file formats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nasstudy.stages import report
from nasstudy.tracking import MemoryTracker

SPACES = ["initial", "nse"]
METHODS = ["random", "rea"]
# (space, method) -> (supernet_acc, test_acc): tau by hand = (5 concordant - 1 discordant) / 6 = 2/3
ACCS = {
    ("initial", "random"): (50.0, 55.0),
    ("initial", "rea"): (60.0, 65.0),
    ("nse", "random"): (70.0, 60.0),
    ("nse", "rea"): (80.0, 80.0),
}
OPS = ["mb3_e3", "mb5_e3", "mb3_e1", "mb3_e6", "mb5_e6", "mb7_e3"]


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


def make_tree(root: Path, transfer: bool = True) -> dict[str, list[Path]]:
    rng = np.random.default_rng(0)
    inp: dict[str, list[Path]] = {
        k: []
        for k in [
            "random_archs",
            "fronts",
            "op_stats",
            "search_best",
            "search_history",
            "retrain_metrics",
            "retrain_timing",
            "transfer_metrics",
            "transfer_examples",
        ]
    }
    for space in SPACES:
        inp["random_archs"].append(_csv(root / "supernet" / space / "random_archs.csv", _archs(rng, 50)))
    for g in (1, 2):
        df = _archs(rng, 20)
        df["on_front"] = (np.arange(20) % 4 == 0).astype(int)
        front = df[["arch", "flops", "params", "acc", "on_front"]]
        inp["fronts"].append(_csv(root / "space" / "nse" / f"gen{g}" / "front.csv", front))
        rows = []
        for pos in range(3):
            # gen 1 drops mb3_e1 and adds mb3_e6; gen 2 drops mb5_e3 and adds mb5_e6
            old, new = (OPS[:4], OPS[:2] + OPS[3:5]) if g == 1 else (OPS[:2] + OPS[3:5], [OPS[0]] + OPS[3:6])
            for op in old:
                status = "kept" if op in new else "dropped"
                rows.append([pos, op, 0.1, 0.5, 2 if status == "kept" else 0, status])
            for op in set(new) - set(old):
                rows.append([pos, op, 0.0, 0.5, 0, "added"])
        stats = pd.DataFrame(rows, columns=["position", "op", "alpha", "prob", "front_count", "status"])
        inp["op_stats"].append(_csv(root / "space" / "nse" / f"gen{g}" / "op_stats.csv", stats))
    for (space, method), (sacc, tacc) in ACCS.items():
        d = root / "search" / space / method
        h = _archs(rng, 10)
        h["acc"] = np.minimum(h["acc"], sacc - 1)
        h.loc[6, "acc"] = sacc  # best found at query 7
        h.insert(0, "query", np.arange(1, 11))
        h["best_acc"] = h["acc"].cummax()
        inp["search_history"].append(_csv(d / "history.csv", h))
        best = {
            "arch": "a6",
            "ops": [["mb3_e3"]] * 7,
            "supernet_acc": sacc,
            "flops": 5e6,
            "params": 250e3,
            "queries": 10,
            "queries_to_best": 7,
            "space": space,
            "method": method,
        }
        inp["search_best"].append(_json(d / "best.json", best))
        d = root / "retrain" / space / method
        m = {
            "test_acc": tacc,
            "val_acc": tacc,
            "params": 251_000,
            "flops": 5_100_000,
            "supernet_acc": sacc,
            "arch": "a6",
        }
        inp["retrain_metrics"].append(_json(d / "metrics.json", m))
        inp["retrain_timing"].append(_json(d / "timing.json", {"latency_ms": 1.5, "train_seconds": 9.0}))
        if transfer:
            t = root / "transfer"
            # per_class as transfer writes it; nse/random saw no "bus" (a blank cell in the table)
            ap = {"car": tacc / 5, "person": tacc / 10} | ({} if (space, method) == ("nse", "random") else {"bus": 1.5})
            inp["transfer_metrics"].append(
                _json(
                    t / "detection" / space / method / "metrics.json",
                    {"map": tacc / 4, "map_50": 1, "map_75": 1, "per_class": ap},
                )
            )
            iou = {"background": 90.0, "car": tacc / 3, "person": 12.345}
            inp["transfer_metrics"].append(
                _json(
                    t / "segmentation" / space / method / "metrics.json",
                    {"miou": tacc / 2, "pixel_acc": 90, "per_class": iou},
                )
            )
            for task in ("detection", "segmentation"):
                png = t / task / space / method / "examples.png"
                png.write_bytes(b"\x89PNG\r\n\x1a\n")
                inp["transfer_examples"].append(png)
    return inp


OUT_NAMES = {
    "summary_csv": "summary.csv",
    "summary_md": "summary.md",
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
    "search": {"spaces": SPACES, "methods": METHODS},
}


def _run(tmp_path: Path, transfer: bool = True) -> tuple[dict[str, Path], MemoryTracker]:
    inp = make_tree(tmp_path / "results" / "t", transfer=transfer)
    out = {k: tmp_path / "results" / "t" / "report" / v for k, v in OUT_NAMES.items()}
    tracker = MemoryTracker()
    report.run(inp, out, PARAMS, {}, tracker)
    return out, tracker


def test_parse_path() -> None:
    assert report.parse_path("results/s/transfer/detection/nse/rea/metrics.json") == {
        "file": "metrics.json",
        "stage": "transfer",
        "task": "detection",
        "space": "nse",
        "method": "rea",
    }
    assert report.parse_path("/x/results/s/space/nse/gen3/op_stats.csv")["gen"] == 3
    assert report.parse_path("/x/results/s/space/nse/gen3/op_stats.csv")["evolution"] == "nse"
    assert report.parse_path("results/s/space/gen1/front.csv")["evolution"] == ""
    assert report.parse_path("results/s/supernet/initial/random_archs.csv")["space"] == "initial"
    with pytest.raises(ValueError):
        report.parse_path("results/s/other.csv")


def test_report_full(tmp_path: Path) -> None:
    out, tracker = _run(tmp_path)
    for p in out.values():
        assert p.exists() and p.stat().st_size > 0
    assert out["pareto_plot"].read_bytes()[:4] == b"\x89PNG"

    df = pd.read_csv(out["summary_csv"])
    assert list(zip(df["space"], df["method"])) == list(ACCS)
    r = df.set_index(["space", "method"]).loc[("nse", "random")]
    assert r["test_acc"] == 60.0 and r["supernet_acc"] == 70.0
    assert r["queries"] == 10 and r["queries_to_best"] == 7
    assert r["flops_m"] == pytest.approx(5.1) and r["params_m"] == pytest.approx(0.251)
    assert r["det_map"] == 15.0 and r["seg_miou"] == 30.0 and r["latency_ms"] == 1.5

    rep = json.loads(out["report_json"].read_text())
    assert rep["kendall_tau"]["n"] == 4
    assert rep["kendall_tau"]["tau"] == pytest.approx(2 / 3)
    assert 0 < rep["kendall_tau"]["p_value"] <= 1
    assert rep["random_archs"]["initial"]["n"] == 50
    assert [f["gen"] for f in rep["evolution"]] == [1, 2] and rep["evolution"][0]["n_front"] == 5
    # after gen 2 the active ops are mb3_e3, mb3_e6, mb5_e6, mb7_e3 at all 3 positions
    assert rep["op_active"]["mb7_e3"] == {"nse gen 1": 0, "nse gen 2": 3}
    assert rep["op_active"]["mb5_e3"] == {"nse gen 1": 3, "nse gen 2": 0}

    md = out["summary_md"].read_text()
    assert "| nse | rea |" in md and "251.0K" in md and "0.667" in md
    # per-class tables: rows = class, columns = space / method in the main table's order
    header = "| Class | initial / random | initial / rea | nse / random | nse / rea |"
    assert md.count(header) == 2
    assert "### Detection: AP per category (%)" in md and "### Segmentation: IoU per class (%)" in md
    assert "| bus | 1.50 | 1.50 | — | 1.50 |" in md
    assert "| car | 11.00 | 13.00 | 12.00 | 16.00 |" in md  # AP = test_acc / 5
    seg = md[md.index("### Segmentation") :]
    assert seg.index("| background |") < seg.index("| car |") < seg.index("| person | 12.35 |")
    assert "[nse / rea](../transfer/segmentation/nse/rea/examples.png)" in md
    assert rep["transfer_per_class"]["detection"]["nse / random"] == {"car": 12.0, "person": 6.0}
    assert tracker.last("kendall_tau") == pytest.approx(2 / 3)
    assert tracker.last("initial/rea/test_acc") == 65.0
    assert out["ops_plot"] in tracker.artifacts and out["summary_md"] in tracker.artifacts


def test_report_without_transfer(tmp_path: Path) -> None:
    out, _ = _run(tmp_path, transfer=False)
    df = pd.read_csv(out["summary_csv"])
    assert len(df) == 4 and df["det_map"].isna().all() and df["seg_miou"].isna().all()
    assert df["test_acc"].notna().all()
    md = out["summary_md"].read_text()
    assert "—" in md and "Per-class" not in md and "examples.png" not in md
    for p in out.values():
        assert p.stat().st_size > 0
    # same inputs, same bytes: PNGs carry no version stamp
    inp = make_tree(tmp_path / "results" / "t", transfer=False)
    out2 = {k: tmp_path / "again" / v for k, v in OUT_NAMES.items()}
    report.run(inp, out2, PARAMS, {}, MemoryTracker())
    for k in OUT_NAMES:
        assert out2[k].read_bytes() == out[k].read_bytes(), k


def test_kendall_undefined() -> None:
    rows = [{"supernet_acc": 50.0, "test_acc": 60.0}, {"supernet_acc": 50.0, "test_acc": 70.0}]
    assert report.kendall(rows) == {"n": 2, "tau": None, "p_value": None}
    assert report.kendall(rows[:1])["tau"] is None


def test_report_empty(tmp_path: Path) -> None:
    out = {k: tmp_path / v for k, v in OUT_NAMES.items()}
    report.run({}, out, PARAMS, {}, MemoryTracker())
    assert pd.read_csv(out["summary_csv"]).empty
    assert json.loads(out["report_json"].read_text())["kendall_tau"] == {"n": 0, "tau": None, "p_value": None}
    assert all(p.stat().st_size > 0 for p in out.values())


def test_op_counts_reads_nse_and_autospace_op_stats(tmp_path):
    """NSE's op_stats (status, front_count) and AutoSpace's (an `active` flag, no front) in one heatmap."""
    nse = tmp_path / "space" / "nse" / "gen1" / "op_stats.csv"
    auto = tmp_path / "space" / "autospace" / "gen1" / "op_stats.csv"
    for path in (nse, auto):
        path.parent.mkdir(parents=True)
    nse.write_text(
        "position,op,alpha,prob,front_count,status\n0,a,0.1,0.5,2,kept\n1,a,0.1,0.5,1,kept\n1,b,-1,0.2,0,dropped\n"
    )
    auto.write_text("position,op,fitness,status,alpha,picks,active,parent\n0,a,0.0,reference,0,0,1,\n"
                    "0,b,-2.0,dropped,0,0,0,\n1,c,0.3,new,0,0,1,a\n")  # fmt: skip
    ops, gens, active, front = report.op_counts({"op_stats": [str(nse), str(auto)]}, ["a", "b", "c"])
    assert ops == ["a", "b", "c"] and gens == ["autospace gen 1", "nse gen 1"]
    assert active.tolist() == [[1, 2], [0, 0], [1, 0]] and front.tolist() == [[0, 3], [0, 0], [0, 0]]
