"""The report's tables: read the small result files of a study into one row per replicate, and
aggregate them per (space, method) cell.

Paths are parsed from their end, so whatever lies above `results/{study}` does not matter. Search
and retrain files live in `{stage}/{space}/{method}/rep{r}/` (replicate r); the older layout without
the `rep{r}` folder reads as replicate 0, so a single-seed study still reports.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nasstudy.report_stats import mean_ci
from nasstudy.utils import read_json

# Per-replicate columns the report aggregates: (column, Markdown header).
METRICS = [
    ("queries", "Queries"),
    ("queries_to_best", "Queries to best"),
    ("supernet_acc", "Supernet acc (%)"),
    ("test_acc", "Test acc (%)"),
    ("flops_m", "FLOPs (M)"),
    ("params_m", "Params (M)"),
    ("latency_ms", "CPU latency (ms)"),
    ("det_map", "Det. mAP"),
    ("seg_miou", "Seg. mIoU"),
]
# The values each metric can take: its t interval is clipped to them (a count is at least 1, a size
# at least 0, an accuracy, mAP or mIoU in percent at most 100).
BOUNDS = {
    "queries": (1, None),
    "queries_to_best": (1, None),
    "flops_m": (0, None),
    "params_m": (0, None),
    "latency_ms": (0, None),
} | {c: (0, 100) for c in ("supernet_acc", "test_acc", "det_map", "seg_miou")}
STATS = ("mean", "std", "ci_low", "ci_high", "n")
REPLICATE_COLUMNS = ["space", "method", "rep", *(c for c, _ in METRICS), "arch"]
REP_DIR = re.compile(r"^rep(\d+)$")


def parse_path(path: str | Path) -> dict[str, Any]:
    """Read stage, space, method, replicate, task, generation or ranking index from an artifact path."""
    p = Path(path).parts
    info: dict[str, Any] = {"file": p[-1]}
    if len(p) >= 5 and p[-5] in ("search", "retrain") and REP_DIR.match(p[-2]):
        info.update(stage=p[-5], space=p[-4], method=p[-3], rep=int(REP_DIR.match(p[-2]).group(1)))
    elif len(p) >= 4 and p[-4] in ("search", "retrain"):
        info.update(stage=p[-4], space=p[-3], method=p[-2], rep=0)
    elif len(p) >= 5 and p[-5] == "transfer":
        info.update(stage="transfer", task=p[-4], space=p[-3], method=p[-2])
    elif len(p) >= 4 and p[-4] == "ranking" and p[-2].startswith("arch") and p[-2][4:].isdigit():
        info.update(stage="ranking", space=p[-3], index=int(p[-2][4:]))
    elif len(p) >= 3 and p[-3] in ("supernet", "ranking"):
        info.update(stage=p[-3], space=p[-2])
    elif len(p) >= 2 and p[-2].startswith("gen") and p[-2][3:].isdigit():
        evolution = p[-3] if len(p) >= 3 and p[-3] != "space" else ""  # space/{evolution}/gen{g}
        info.update(stage="space", evolution=evolution, gen=int(p[-2][3:]))
    else:
        raise ValueError(f"not a known artifact path: {path}")
    return info


def paths(inputs: dict, name: str) -> list[Path]:
    """A named input as a list of paths (absent, one path, or many)."""
    v = inputs.get(name) or []
    if isinstance(v, str | Path):
        v = [v]
    return [Path(x) for x in v]


def num(v: Any) -> float | None:
    """A finite float, or None for missing/NaN (so JSON gets null and tables a blank)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def mega(v: Any) -> float | None:
    """A count in millions (FLOPs, params), or None."""
    f = num(v)
    return None if f is None else f / 1e6


def order(names: set[str], preferred: list[str] | None) -> list[str]:
    """Names in params order where known, the rest alphabetically."""
    pref = [n for n in (preferred or []) if n in names]
    return pref + sorted(names - set(pref))


def load_replicates(inputs: dict, spaces: list[str] | None, methods: list[str] | None) -> pd.DataFrame:
    """One row per (space, method, replicate) seen in any search, retrain or transfer file, in params
    order. Transfer results belong to replicate 0 (only its arch is transferred)."""
    rows: dict[tuple[str, str, int], dict[str, Any]] = {}

    def row(info: dict, rep: int | None = None) -> dict[str, Any]:
        key = (info["space"], info["method"], info.get("rep", 0) if rep is None else rep)
        if key not in rows:
            rows[key] = {c: None for c in REPLICATE_COLUMNS} | dict(zip(("space", "method", "rep"), key))
        return rows[key]

    for path in paths(inputs, "search_history"):
        r, h = row(parse_path(path)), pd.read_csv(path).sort_values("query")
        if len(h):
            r["queries"] = int(h["query"].max())
            r["queries_to_best"] = int(h["query"].iloc[int(np.argmax(h["acc"].to_numpy()))])
            r["supernet_acc"] = num(h["acc"].max())
    for path in paths(inputs, "search_best"):
        r, b = row(parse_path(path)), read_json(path)
        for key in ("queries", "queries_to_best"):
            if b.get(key) is not None:
                r[key] = int(b[key])
        r["supernet_acc"] = num(b.get("supernet_acc"))
        r["flops_m"], r["params_m"], r["arch"] = mega(b.get("flops")), mega(b.get("params")), b.get("arch")
    for path in paths(inputs, "retrain_metrics"):
        r, m = row(parse_path(path)), read_json(path)
        r["test_acc"] = num(m.get("test_acc"))
        r["flops_m"] = mega(m.get("flops")) or r["flops_m"]
        r["params_m"] = mega(m.get("params")) or r["params_m"]
        r["arch"] = m.get("arch") or r["arch"]
        if r["supernet_acc"] is None:
            r["supernet_acc"] = num(m.get("supernet_acc"))
    for path in paths(inputs, "retrain_timing"):
        row(parse_path(path))["latency_ms"] = num(read_json(path).get("latency_ms"))
    for path in paths(inputs, "transfer_metrics"):
        info, m = parse_path(path), read_json(path)
        if info["task"] == "detection":
            row(info, rep=0)["det_map"] = num(m.get("map"))
        elif info["task"] == "segmentation":
            row(info, rep=0)["seg_miou"] = num(m.get("miou"))

    space_order = order({k[0] for k in rows}, spaces)
    method_order = order({k[1] for k in rows}, methods)
    keys = sorted(rows, key=lambda k: (space_order.index(k[0]), method_order.index(k[1]), k[2]))
    return pd.DataFrame([rows[k] for k in keys], columns=REPLICATE_COLUMNS)


def aggregate(reps: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per (space, method) in the replicates' order: n replicates, and per metric its mean,
    std, 95% t interval and number of values (`<metric>_mean`, `_std`, `_ci_low`, `_ci_high`, `_n`)."""
    out = []
    for (space, method), g in reps.groupby(["space", "method"], sort=False):
        row: dict[str, Any] = {"space": space, "method": method, "n": int(g["rep"].nunique())}
        for col, _ in METRICS:
            s = mean_ci(g[col].tolist(), BOUNDS[col])
            row |= {f"{col}_{k}": s[k] for k in STATS}
        out.append(row)
    return out


def summary_columns() -> list[str]:
    return ["space", "method", "n", *(f"{c}_{k}" for c, _ in METRICS for k in STATS)]


def load_ranking(inputs: dict) -> dict[str, pd.DataFrame]:
    """Per space: the ranking sample (index, arch, supernet_acc, ...) joined with each sampled arch's
    standalone test accuracy; archs not retrained (yet) have test_acc NaN."""
    samples = {parse_path(p)["space"]: pd.read_csv(p) for p in paths(inputs, "ranking_sample")}
    trained: dict[str, dict[int, float | None]] = {}
    for p in paths(inputs, "ranking_metrics"):
        info = parse_path(p)
        trained.setdefault(info["space"], {})[info["index"]] = num(read_json(p).get("test_acc"))
    out = {}
    for space in samples.keys() | trained.keys():
        df = samples.get(space, pd.DataFrame(columns=["index", "supernet_acc"])).copy()
        accs = trained.get(space, {})
        if df.empty:
            df = pd.DataFrame({"index": sorted(accs), "supernet_acc": np.nan})
        df["test_acc"] = [accs.get(int(i), np.nan) for i in df["index"]]
        out[space] = df
    return out


def op_counts(inputs: dict, pool: list[str] | None) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Per op and generation: positions where it is active after the generation, and its front count."""
    frames = []
    for path in paths(inputs, "op_stats"):
        df = pd.read_csv(path)
        info = parse_path(path)
        df["gen"] = f"{info['evolution']} gen {info['gen']}".strip()
        df["order"] = [(info["evolution"], info["gen"])] * len(df)
        frames.append(df)
    if not frames:
        return [], [], np.zeros((0, 0)), np.zeros((0, 0))
    df = pd.concat(frames, ignore_index=True)
    ops = order(set(df["op"]), pool)
    gens = [g for _, g in sorted(set(zip(df["order"], df["gen"])))]
    active = np.zeros((len(ops), len(gens)), dtype=int)
    front = np.zeros((len(ops), len(gens)), dtype=int)
    for (op, gen), g in df.groupby(["op", "gen"]):
        i, j = ops.index(op), gens.index(gen)
        if "active" in g and g["active"].notna().any():  # AutoSpace: an `active` flag per member; no front
            active[i, j] = g.loc[pd.to_numeric(g["active"], errors="coerce").fillna(0) > 0, "position"].nunique()
        else:  # NSE
            active[i, j] = g.loc[g["status"].isin(["kept", "added"]), "position"].nunique()
        if "front_count" in g:
            front[i, j] = int(pd.to_numeric(g["front_count"], errors="coerce").fillna(0).sum())
    return ops, gens, active, front


def random_spread(frames: dict[str, pd.DataFrame]) -> dict[str, dict[str, Any]]:
    """Accuracy spread of the uniformly sampled archs per space: how much the space itself varies."""
    out = {}
    for space, df in frames.items():
        acc = df["acc"].astype(float)
        out[space] = {
            "n": len(acc),
            "mean": num(acc.mean()),
            "std": num(acc.std()),
            "min": num(acc.min()),
            "max": num(acc.max()),
        }
    return out


def front_summary(inputs: dict) -> list[dict[str, Any]]:
    """Per evolution generation: how many archs were scored, how many are on the front, the best acc."""
    out = []
    for path in paths(inputs, "fronts"):
        df = pd.read_csv(path)
        on = df[df["on_front"].astype(int) == 1]
        info = parse_path(path)
        out.append(
            {
                "evolution": info["evolution"],
                "gen": info["gen"],
                "n": len(df),
                "n_front": len(on),
                "best_acc": num(df["acc"].max()) if len(df) else None,
                "front_flops_m": [num(on["flops"].min() / 1e6), num(on["flops"].max() / 1e6)] if len(on) else None,
            }
        )
    return sorted(out, key=lambda d: (d["evolution"], d["gen"]))


def pareto_front(flops: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points (lower FLOPs and higher acc), sorted by FLOPs."""
    idx = np.lexsort((-acc, flops))
    front, best = [], -np.inf
    for i in idx:
        if acc[i] > best:
            front.append(i)
            best = acc[i]
    return np.array(front, dtype=int)


def flat_summary(cells: list[dict], ranking: dict[str, dict], comparisons: list[dict], digits: int = 4) -> dict:
    """summary.json: one flat {name: rounded number} dict for `dvc metrics` (missing values left out):
    `<space>/<method>/<metric>_<stat>`, `<space>/<method>/vs_random_p`, `<space>/ranking/<stat>`."""
    out: dict[str, float] = {}

    def put(key: str, v: Any) -> None:
        f = num(v)
        if f is not None:
            out[key] = round(f, digits)

    for c in cells:
        for col, _ in METRICS:
            for k in ("mean", "std", "ci_low", "ci_high") if col == "test_acc" else ("mean",):
                put(f"{c['space']}/{c['method']}/{col}_{k}", c[f"{col}_{k}"])
        put(f"{c['space']}/{c['method']}/n", c["n"])
    for comp in comparisons:
        put(f"{comp['space']}/{comp['method']}/vs_random_diff", comp["test"]["mean_diff"])
        put(f"{comp['space']}/{comp['method']}/vs_random_p", comp["test"]["p_value"])
    for space, r in ranking.items():
        for k in ("n", "kendall_tau", "spearman_rho", "precision_at_k"):
            put(f"{space}/ranking/{k}", r.get(k))
    return out
