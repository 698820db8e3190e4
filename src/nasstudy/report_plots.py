"""The report's figures: Pareto fronts, search progress, op frequency and supernet-vs-standalone accuracy.

PNGs carry no software stamp, so the same inputs give the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from nasstudy.report_tables import pareto_front
from nasstudy.utils import save_png

FIGSIZE = (7.0, 4.5)
DPI = 120
EXCLUDED = ("relativenas",)  # its supernet acc comes from its own jointly trained weights: not comparable


def _save(fig: Figure, path: Path) -> None:
    """PNG without the software/version stamp, written atomically."""
    save_png(fig, path, dpi=DPI)


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xticks([])
    ax.set_yticks([])


def _panels(n: int, width: float = 0.6) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(FIGSIZE[0] * (width + (1 - width) * max(1, n)), FIGSIZE[1]))
    return fig, list(fig.subplots(1, max(1, n), squeeze=False)[0])


def plot_pareto(
    path: Path, randoms: dict[str, pd.DataFrame], histories: dict, spaces: list[str], methods: list[str]
) -> None:
    """Accuracy vs FLOPs, one panel per space: random archs, every search query (all replicates), the front."""
    fig, axes = _panels(len(spaces))
    for ax, space in zip(axes, spaces or [None]):
        if space is None:
            _empty(ax, "no results")
            break
        parts = []
        if space in randoms:
            df = randoms[space]
            ax.scatter(df["flops"] / 1e6, df["acc"], s=14, c="0.6", label="random archs", zorder=2)
            parts.append(df[["flops", "acc"]])
        for method in methods:
            dfs = [df for (sp, m, _), df in histories.items() if sp == space and m == method]
            if not dfs:
                continue
            df = pd.concat(dfs)
            color = f"C{methods.index(method) % 10}"
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


def best_so_far(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Best-so-far accuracy per query, one column per replicate (a shorter search keeps its last
    value), and their mean, std and min/max across replicates."""
    cols = {}
    for i, df in enumerate(frames):
        s = df.set_index("query")["best_acc"].astype(float)
        cols[i] = s[~s.index.duplicated()]
    wide = pd.DataFrame(cols).sort_index().ffill()
    return pd.DataFrame(
        {
            "mean": wide.mean(axis=1),
            "std": wide.std(axis=1),
            "min": wide.min(axis=1),
            "max": wide.max(axis=1),
            "n": wide.count(axis=1),
        }
    )


def plot_search(
    path: Path, histories: dict[tuple[str, str, int], pd.DataFrame], spaces: list[str], methods: list[str]
) -> None:
    """Best-so-far supernet accuracy against queries, one panel per space: the mean over replicates
    per method, with a band from the lowest to the highest replicate."""
    fig, axes = _panels(len(spaces), width=0.5)
    for ax, space in zip(axes, spaces or [None]):
        runs = {m: [df for (sp, mm, _), df in histories.items() if sp == space and mm == m] for m in methods}
        runs = {m: dfs for m, dfs in runs.items() if dfs}
        if space is None or not runs:
            _empty(ax, "no search histories")
            ax.set_title(f"space: {space}" if space else "")
            continue
        for method, dfs in runs.items():
            color = f"C{methods.index(method) % 10}"
            agg = best_so_far(dfs)
            ax.step(agg.index, agg["mean"], where="post", color=color, lw=1.5, label=f"{method} (n={len(dfs)})")
            if len(dfs) > 1:
                ax.fill_between(agg.index, agg["min"], agg["max"], step="post", color=color, alpha=0.15, lw=0)
        ax.legend(fontsize=8, loc="lower right")
        ax.set_title(f"space: {space}")
        ax.set_xlabel("queries")
        ax.set_ylabel("best supernet accuracy so far (%)")
        ax.grid(alpha=0.3)
    fig.suptitle("Search progress: mean over replicates, band = min to max")
    fig.tight_layout()
    _save(fig, path)


def plot_ops(path: Path, ops: list[str], gens: list[str], active: np.ndarray, front: np.ndarray) -> None:
    """Two heatmaps, ops x generation: where each op is active, and how often front archs use it.
    Generation labels are slanted and the figure widens with their number, so they do not overlap."""
    width = max(FIGSIZE[0] * 1.5, 2 * (2.5 + 0.55 * len(gens)))
    fig = Figure(figsize=(width, max(FIGSIZE[1], 0.35 * len(ops) + 2.5)), layout="constrained")
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
        ax.set_xticks(range(len(gens)), gens, rotation=35, ha="right", rotation_mode="anchor", fontsize=8)
        ax.set_yticks(range(len(ops)), ops, fontsize=8)
        ax.set_xlabel("generation")
        fig.colorbar(im, ax=ax, fraction=0.05, ticks=MaxNLocator(integer=True))
    fig.suptitle("Search-space evolution: op frequency per generation")
    _save(fig, path)


def plot_correlation(
    path: Path, reps: pd.DataFrame, ranking: dict[str, pd.DataFrame], spaces: list[str], title: str
) -> None:
    """Supernet-estimated vs retrained accuracy: the ranking sample (one colour, unbiased) and the
    search winners (coloured by space; RelativeNAS left out, its supernet acc is its own weights')."""
    fig = Figure(figsize=FIGSIZE)
    ax = fig.subplots()
    drawn = False
    sample = [df.dropna(subset=["supernet_acc", "test_acc"]) for df in ranking.values()]
    sample = [df for df in sample if len(df)]
    if sample:
        df = pd.concat(sample)
        ax.scatter(
            df["supernet_acc"],
            df["test_acc"],
            s=22,
            marker="x",
            color="0.35",
            zorder=2,
            label=f"ranking sample (n={len(df)})",
        )
        drawn = True
    win = reps[~reps["method"].isin(EXCLUDED)].dropna(subset=["supernet_acc", "test_acc"])
    for i, space in enumerate(spaces):
        g = win[win["space"] == space]
        if len(g):
            ax.scatter(
                g["supernet_acc"],
                g["test_acc"],
                color=f"C{i % 10}",
                s=40,
                zorder=3,
                label=f"winners, {space} (n={len(g)})",
            )
            drawn = True
    if drawn:
        ax.margins(0.1)
        ax.legend(fontsize=8)
    else:
        _empty(ax, "no retrained archs")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("supernet-estimated accuracy (%, val)")
    ax.set_ylabel("retrained test accuracy (%)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def correlation_title(ranking_stats: dict[str, dict[str, Any]], winners: dict[str, Any]) -> str:
    """Kendall's tau per space from the ranking sample, then the winners' (selection-biased) tau."""
    parts = [
        f"{s}: {r['kendall_tau']:.2f} (n={r['n']})" for s, r in ranking_stats.items() if r["kendall_tau"] is not None
    ]
    head = "Kendall's tau, ranking sample — " + (", ".join(parts) if parts else "no sample")
    w = "undefined" if winners["tau"] is None else f"{winners['tau']:.2f}"
    return f"{head}\nwinners without RelativeNAS (selection-biased): tau = {w}, n = {winners['n']}"
