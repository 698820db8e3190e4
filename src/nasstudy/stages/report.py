"""Report stage: gather every result of the study into one table, a JSON summary and four figures.

Per-class transfer tables and the links to the transfer jobs' examples.png come from
nasstudy.report_transfer.

It only reads the small CSV/JSON files the other stages write (docs/architecture.md, "File
formats") and never fails on a missing piece: a task that did not run shows as a blank cell.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from scipy.stats import kendalltau

from nasstudy import report_transfer
from nasstudy.tracking import Tracker
from nasstudy.utils import atomic_write_bytes, read_json, save_png, write_json

# Main table: (CSV column, Markdown header). CSV keeps plain numbers; Markdown formats them.
COLUMNS = [
    ("space", "Space"),
    ("method", "Method"),
    ("queries", "Queries"),
    ("queries_to_best", "Queries to best"),
    ("supernet_acc", "Supernet acc (%)"),
    ("test_acc", "Test acc (%)"),
    ("flops_m", "FLOPs (M)"),
    ("params_m", "Params"),
    ("latency_ms", "CPU latency (ms)"),
    ("det_map", "Det. mAP"),
    ("seg_miou", "Seg. mIoU"),
]
FIGSIZE = (7.0, 4.5)
DPI = 120


def parse_path(path: str | Path) -> dict[str, Any]:
    """Read stage, space, method, replicate, task and generation from an artifact path.

    Indexes from the file's end, so whatever lies above `results/{study}` does not matter.
    """
    p = Path(path).parts
    info: dict[str, Any] = {"file": p[-1]}
    if len(p) >= 5 and p[-5] in ("search", "retrain") and p[-2].startswith("rep") and p[-2][3:].isdigit():
        info.update(stage=p[-5], space=p[-4], method=p[-3], rep=int(p[-2][3:]))  # {stage}/{space}/{method}/rep{r}
    elif len(p) >= 4 and p[-4] in ("search", "retrain"):
        info.update(stage=p[-4], space=p[-3], method=p[-2])
    elif len(p) >= 5 and p[-5] == "transfer":
        info.update(stage="transfer", task=p[-4], space=p[-3], method=p[-2])
    elif len(p) >= 3 and p[-3] == "supernet":
        info.update(stage="supernet", space=p[-2])
    elif len(p) >= 2 and p[-2].startswith("gen") and p[-2][3:].isdigit():
        evolution = p[-3] if len(p) >= 3 and p[-3] != "space" else ""  # space/{evolution}/gen{g}
        info.update(stage="space", evolution=evolution, gen=int(p[-2][3:]))
    else:
        raise ValueError(f"not a known artifact path: {path}")
    return info


def _paths(inputs: dict, name: str) -> list[Path]:
    """A named input as a list of paths (absent, one path, or many)."""
    v = inputs.get(name) or []
    if isinstance(v, str | Path):
        v = [v]
    return [Path(x) for x in v]


def _num(v: Any) -> float | None:
    """A finite float, or None for missing/NaN (so JSON gets null and tables a blank)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _mega(v: Any) -> float | None:
    """A count in millions (FLOPs, params), or None."""
    f = _num(v)
    return None if f is None else f / 1e6


def _order(names: set[str], preferred: list[str] | None) -> list[str]:
    """Names in params order where known, the rest alphabetically."""
    pref = [n for n in (preferred or []) if n in names]
    return pref + sorted(names - set(pref))


def pareto_front(flops: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points (lower FLOPs and higher acc), sorted by FLOPs."""
    idx = np.lexsort((-acc, flops))
    front, best = [], -np.inf
    for i in idx:
        if acc[i] > best:
            front.append(i)
            best = acc[i]
    return np.array(front, dtype=int)


def build_table(inputs: dict, params: dict) -> list[dict[str, Any]]:
    """One row per (space, method) seen in any search, retrain or transfer file."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}

    def row(info: dict) -> dict[str, Any]:
        key = (info["space"], info["method"])
        if key not in rows:
            rows[key] = {c: None for c, _ in COLUMNS} | {"space": key[0], "method": key[1]}
        return rows[key]

    for path in _paths(inputs, "search_history"):
        r, h = row(parse_path(path)), pd.read_csv(path).sort_values("query")
        if len(h):
            r["queries"] = int(h["query"].max())
            r["queries_to_best"] = int(h["query"].iloc[int(np.argmax(h["acc"].to_numpy()))])
            r["supernet_acc"] = _num(h["acc"].max())
    for path in _paths(inputs, "search_best"):
        r, b = row(parse_path(path)), read_json(path)
        for key in ("queries", "queries_to_best"):
            if b.get(key) is not None:
                r[key] = int(b[key])
        r["supernet_acc"] = _num(b.get("supernet_acc"))
        r["flops_m"], r["params_m"] = _mega(b.get("flops")), _mega(b.get("params"))
    for path in _paths(inputs, "retrain_metrics"):
        r, m = row(parse_path(path)), read_json(path)
        r["test_acc"] = _num(m.get("test_acc"))
        r["flops_m"] = _mega(m.get("flops")) or r["flops_m"]
        r["params_m"] = _mega(m.get("params")) or r["params_m"]
        if r["supernet_acc"] is None:
            r["supernet_acc"] = _num(m.get("supernet_acc"))
    for path in _paths(inputs, "retrain_timing"):
        row(parse_path(path))["latency_ms"] = _num(read_json(path).get("latency_ms"))
    for path in _paths(inputs, "transfer_metrics"):
        info = parse_path(path)
        m = read_json(path)
        if info["task"] == "detection":
            row(info)["det_map"] = _num(m.get("map"))
        elif info["task"] == "segmentation":
            row(info)["seg_miou"] = _num(m.get("miou"))

    spaces = _order({k[0] for k in rows}, params.get("search", {}).get("spaces"))
    methods = _order({k[1] for k in rows}, params.get("search", {}).get("methods"))
    keys = sorted(rows, key=lambda k: (spaces.index(k[0]), methods.index(k[1])))
    return [rows[k] for k in keys]


def kendall(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Rank agreement between supernet-estimated and retrained accuracy (null if undefined)."""
    pairs = [(r["supernet_acc"], r["test_acc"]) for r in rows]
    pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
    out: dict[str, Any] = {"n": len(pairs), "tau": None, "p_value": None}
    if len(pairs) >= 2:
        x, y = zip(*pairs)
        if len(set(x)) > 1 and len(set(y)) > 1:
            res = kendalltau(x, y)
            out["tau"], out["p_value"] = _num(res.statistic), _num(res.pvalue)
    return out


def random_spread(frames: dict[str, pd.DataFrame]) -> dict[str, dict[str, Any]]:
    """Accuracy spread of the uniformly sampled archs per space: how much the space itself varies."""
    out = {}
    for space, df in frames.items():
        acc = df["acc"].astype(float)
        out[space] = {
            "n": len(acc),
            "mean": _num(acc.mean()),
            "std": _num(acc.std()),  # sample std (ddof=1)
            "min": _num(acc.min()),
            "max": _num(acc.max()),
        }
    return out


def front_summary(inputs: dict) -> list[dict[str, Any]]:
    """Per evolution generation: how many archs were scored, how many are on the front, the best acc."""
    out = []
    for path in _paths(inputs, "fronts"):
        df = pd.read_csv(path)
        on = df[df["on_front"].astype(int) == 1]
        out.append(
            {
                "evolution": parse_path(path)["evolution"],
                "gen": parse_path(path)["gen"],
                "n": len(df),
                "n_front": len(on),
                "best_acc": _num(df["acc"].max()) if len(df) else None,
                "front_flops_m": [_num(on["flops"].min() / 1e6), _num(on["flops"].max() / 1e6)] if len(on) else None,
            }
        )
    return sorted(out, key=lambda d: (d["evolution"], d["gen"]))


# ----------------------------------------------------------------------------- writing


def _fmt(col: str, v: Any) -> str:
    if v is None:
        return "—"
    if col == "params_m":
        return f"{v:.2f}M" if v >= 1 else f"{v * 1e3:.1f}K"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    df = pd.DataFrame(rows, columns=[c for c, _ in COLUMNS])
    atomic_write_bytes(path, df.to_csv(index=False, float_format="%.6g").encode())


def write_markdown(
    path: Path,
    rows: list[dict],
    tau: dict,
    spread: dict,
    fronts: list[dict],
    figures: Sequence[str] = (),
    sections: Sequence[str] = (),
) -> None:
    """The table a person reads, with one line per figure and the numbers behind them; `figures`
    adds lines to the figures list, `sections` whole sections after it."""
    lines = ["# NAS study summary", ""]
    lines.append("| " + " | ".join(h for _, h in COLUMNS) + " |")
    lines.append("|" + "|".join("---" if c in ("space", "method") else "---:" for c, _ in COLUMNS) + "|")
    for r in rows:
        lines.append("| " + " | ".join(_fmt(c, r[c]) for c, _ in COLUMNS) + " |")
    if not rows:
        lines.append("| " + " | ".join("—" for _ in COLUMNS) + " |")
    lines += [
        "",
        "Supernet acc: best accuracy found by the search with inherited supernet weights (val split). "
        "Test acc: the same arch retrained from scratch (test split). Det. mAP and Seg. mIoU: the arch "
        "as a backbone on the detection and segmentation tasks. — means not available.",
        "",
        "## Figures",
        "",
    ]
    if tau["tau"] is None:
        lines.append(f"- correlation.png: Kendall's tau undefined (n={tau['n']}).")
    else:
        lines.append(
            f"- correlation.png: Kendall's tau between supernet and retrained accuracy = "
            f"{tau['tau']:.3f} (n={tau['n']}, p={tau['p_value']:.3g})."
        )
    for space, s in spread.items():
        lines.append(
            f"- pareto.png: {space}, {s['n']} random archs: acc mean {_fmt('', s['mean'])}, "
            f"std {_fmt('', s['std'])}, range {_fmt('', s['min'])}–{_fmt('', s['max'])}."
        )
    lines.append("- search.png: best-so-far supernet accuracy against queries, one line per search.")
    for f in fronts:
        lines.append(
            f"- evolution, {f['evolution']} gen {f['gen']}: {f['n_front']} of {f['n']} archs on the front, "
            f"best acc {_fmt('', f['best_acc'])}."
        )
    lines += [*figures, *sections]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


def _save(fig: Figure, path: Path) -> None:
    """PNG without the software/version stamp, written atomically."""
    save_png(fig, path, dpi=DPI)


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_pareto(path: Path, randoms: dict[str, pd.DataFrame], histories: dict, spaces: list[str]) -> None:
    """Accuracy vs FLOPs, one panel per space: random archs, every search query, and the front."""
    n, methods = max(1, len(spaces)), sorted({m for _, m in histories})
    fig = Figure(figsize=(FIGSIZE[0] * (0.6 + 0.4 * n), FIGSIZE[1]))
    axes = fig.subplots(1, n, squeeze=False)
    for ax, space in zip(axes[0], spaces or [None]):
        if space is None:
            _empty(ax, "no results")
            break
        parts = []
        if space in randoms:
            df = randoms[space]
            ax.scatter(df["flops"] / 1e6, df["acc"], s=14, c="0.6", label="random archs", zorder=2)
            parts.append(df[["flops", "acc"]])
        for (sp, method), df in histories.items():
            if sp != space:
                continue
            color = f"C{methods.index(method)}"
            ax.scatter(df["flops"] / 1e6, df["acc"], s=12, alpha=0.6, color=color, label=method, zorder=3)
            parts.append(df[["flops", "acc"]])
        if parts:
            pts = pd.concat(parts).dropna()
            f, a = pts["flops"].to_numpy(float), pts["acc"].to_numpy(float)
            idx = pareto_front(f, a)
            ax.step(f[idx] / 1e6, a[idx], where="post", color="k", lw=1.5, label="Pareto front", zorder=4)
            ax.legend(fontsize=8, loc="lower right")
        ax.set_title(f"space: {space}")
        ax.set_xlabel("FLOPs (M MACs)")
        ax.set_ylabel("supernet accuracy (%)")
        ax.grid(alpha=0.3)
    fig.suptitle("Accuracy vs FLOPs (supernet-estimated)")
    fig.tight_layout()
    _save(fig, path)


def plot_search(path: Path, histories: dict[tuple[str, str], pd.DataFrame], spaces: list[str]) -> None:
    """Best-so-far accuracy against queries: how fast each method finds its best arch in each space."""
    fig = Figure(figsize=FIGSIZE)
    ax = fig.subplots()
    methods = sorted({m for _, m in histories})
    styles = ["-", "--", ":", "-."]
    for (space, method), df in histories.items():
        ls = styles[spaces.index(space) % len(styles)] if space in spaces else "-"
        color = f"C{methods.index(method)}"
        label = f"{space} / {method}"
        ax.step(df["query"], df["best_acc"], where="post", ls=ls, color=color, lw=1.5, label=label)
    if histories:
        ax.legend(fontsize=8, title="space / method", loc="lower right")
    else:
        _empty(ax, "no search histories")
    ax.set_xlabel("queries")
    ax.set_ylabel("best supernet accuracy so far (%)")
    ax.set_title("Search progress")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def op_counts(inputs: dict, pool: list[str] | None) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Per op and generation: positions where it is active after the generation, and its front count."""
    frames = []
    for path in _paths(inputs, "op_stats"):
        df = pd.read_csv(path)
        info = parse_path(path)
        df["gen"] = f"{info['evolution']} gen {info['gen']}".strip()
        df["order"] = [(info["evolution"], info["gen"])] * len(df)
        frames.append(df)
    if not frames:
        return [], [], np.zeros((0, 0)), np.zeros((0, 0))
    df = pd.concat(frames, ignore_index=True)
    ops = _order(set(df["op"]), pool)
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


def plot_ops(path: Path, ops: list[str], gens: list[str], active: np.ndarray, front: np.ndarray) -> None:
    """Two heatmaps, ops x generation: where each op is active, and how often front archs use it."""
    fig = Figure(figsize=(FIGSIZE[0] * 1.5, max(FIGSIZE[1], 0.35 * len(ops) + 1.5)))
    axes = fig.subplots(1, 2)
    panels = [
        (active, "positions where the op is active\n(after the generation)", "Blues"),
        (front, "uses by Pareto-front archs\n(summed over positions)", "Oranges"),
    ]
    for ax, (mat, title, cmap) in zip(axes, panels):
        ax.set_title(title, fontsize=10)
        if not ops:
            _empty(ax, "no space evolution")
            continue
        im = ax.imshow(mat, cmap=cmap, aspect="auto", vmin=0, vmax=max(1, int(mat.max())))
        for i in range(len(ops)):
            for j in range(len(gens)):
                dark = mat[i, j] > 0.6 * max(1, mat.max())
                ax.text(j, i, str(mat[i, j]), ha="center", va="center", fontsize=8, color="w" if dark else "k")
        ax.set_xticks(range(len(gens)), gens)
        ax.set_yticks(range(len(ops)), ops)
        ax.set_xlabel("generation")
        fig.colorbar(im, ax=ax, fraction=0.05, ticks=MaxNLocator(integer=True))
    fig.suptitle("Search-space evolution: op frequency per generation")
    fig.tight_layout()
    _save(fig, path)


def plot_correlation(path: Path, rows: list[dict[str, Any]], tau: dict[str, Any]) -> None:
    """Supernet-estimated vs retrained accuracy: does the supernet rank archs the way training does?"""
    fig = Figure(figsize=FIGSIZE)
    ax = fig.subplots()
    pts = [r for r in rows if r["supernet_acc"] is not None and r["test_acc"] is not None]
    spaces = sorted({r["space"] for r in pts})
    for i, space in enumerate(spaces):
        x, y = zip(*[(r["supernet_acc"], r["test_acc"]) for r in pts if r["space"] == space])
        ax.scatter(x, y, color=f"C{i}", s=40, label=space, zorder=3)
    for r in pts:
        xy = (r["supernet_acc"], r["test_acc"])
        ax.annotate(r["method"], xy, fontsize=8, xytext=(4, 4), textcoords="offset points")
    if pts:
        ax.margins(0.15)
        ax.legend(title="space", fontsize=8)
    else:
        _empty(ax, "no retrained archs")
    t = "undefined" if tau["tau"] is None else f"{tau['tau']:.3f} (p={tau['p_value']:.3g})"
    ax.set_title(f"Supernet vs retrained accuracy — Kendall's tau = {t}, n = {tau['n']}", fontsize=10)
    ax.set_xlabel("supernet-estimated accuracy (%, val)")
    ax.set_ylabel("retrained test accuracy (%)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


# ----------------------------------------------------------------------------- stage


def run(
    inputs: dict[str, list[Path]],
    outputs: dict[str, Path],
    params: dict,
    wildcards: dict[str, str],
    tracker: Tracker,
) -> None:
    """Write the summary table, report.json and the four figures; log numbers and files."""
    out = {k: Path(v) for k, v in outputs.items()}
    rows = build_table(inputs, params)
    randoms = {parse_path(p)["space"]: pd.read_csv(p) for p in _paths(inputs, "random_archs")}
    histories = {}
    for p in _paths(inputs, "search_history"):
        info = parse_path(p)
        histories[(info["space"], info["method"])] = pd.read_csv(p).sort_values("query")
    spaces = _order(
        {r["space"] for r in rows} | set(randoms) | {s for s, _ in histories},
        params.get("search", {}).get("spaces"),
    )
    histories = dict(sorted(histories.items(), key=lambda kv: (spaces.index(kv[0][0]), kv[0][1])))
    tau = kendall(rows)
    spread = random_spread({s: randoms[s] for s in spaces if s in randoms})
    fronts = front_summary(inputs)
    ops, gens, active, front = op_counts(inputs, params.get("space", {}).get("pool"))
    jobs = [(parse_path(p), read_json(p)) for p in _paths(inputs, "transfer_metrics")]
    per_class = report_transfer.per_class_tables(jobs, [(r["space"], r["method"]) for r in rows])
    examples = [parse_path(p) for p in _paths(inputs, "transfer_examples")]

    write_csv(out["summary_csv"], rows)
    write_markdown(
        out["summary_md"],
        rows,
        tau,
        spread,
        fronts,
        report_transfer.example_lines(examples),
        report_transfer.table_lines(per_class),
    )
    report = {
        "study": params.get("study"),
        "rows": rows,
        "kendall_tau": tau,
        "random_archs": spread,
        "evolution": fronts,
        "op_active": {op: dict(zip(gens, active[i].tolist())) for i, op in enumerate(ops)},
        "transfer_per_class": per_class,
    }
    write_json(out["report_json"], report)
    plot_pareto(out["pareto_plot"], randoms, histories, spaces)
    plot_search(out["search_plot"], histories, spaces)
    plot_ops(out["ops_plot"], ops, gens, active, front)
    plot_correlation(out["correlation_plot"], rows, tau)

    for r in rows:
        for col, _ in COLUMNS[2:]:
            if r[col] is not None:
                tracker.log_metric(f"{r['space']}/{r['method']}/{col}", r[col])
    tracker.log_metric("kendall_n", tau["n"])
    if tau["tau"] is not None:
        tracker.log_metrics({"kendall_tau": tau["tau"], "kendall_p": tau["p_value"]})
    for name in ("summary_md", "report_json", "pareto_plot", "search_plot", "ops_plot", "correlation_plot"):
        tracker.log_artifact(out[name])
