"""The report's statistics: t intervals of replicate means, paired Wilcoxon tests with an effect size,
average ranks, and how well a supernet ranks architectures (with bootstrap intervals).

Everything comes from scipy/numpy; this module only decides which numbers go in and how a result
is put into words. A test that cannot reach significance with the pairs at hand says so instead of
printing a p-value that looks like a finding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 0.05
N_BOOT = 2000


def _num(v: Any) -> float | None:
    """A finite float, or None for missing/NaN (JSON null, a blank cell)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _finite(values: Sequence[Any]) -> np.ndarray:
    x = np.array([_num(v) for v in values], dtype=float)
    return x[np.isfinite(x)]


def mean_ci(values: Sequence[Any], bounds: tuple[float | None, float | None] = (None, None)) -> dict[str, Any]:
    """n, mean, sample std and the 95% t interval of the mean; std and interval are None for n < 2
    (one replicate cannot measure seed noise). `bounds` (low, high) clips the interval to the values
    the metric can take: with n = 3 a t interval of a count or a size often reaches below 0."""
    x = _finite(values)
    n = len(x)
    out: dict[str, Any] = {"n": n, "mean": None, "std": None, "ci_low": None, "ci_high": None}
    if n == 0:
        return out
    out["mean"] = float(x.mean())
    if n < 2:
        return out
    std = float(x.std(ddof=1))
    sem = std / math.sqrt(n)
    lo, hi = (out["mean"], out["mean"]) if sem == 0 else stats.t.interval(CONFIDENCE, n - 1, loc=x.mean(), scale=sem)
    if bounds[0] is not None:
        lo = max(lo, bounds[0])
    if bounds[1] is not None:
        hi = min(hi, bounds[1])
    out.update(std=std, ci_low=float(lo), ci_high=float(hi))
    return out


def min_wilcoxon_p(n: int) -> float:
    """The smallest two-sided p-value the exact Wilcoxon signed-rank test can give with n non-zero
    differences (all of one sign): 2 / 2**n, so below 0.05 only from n = 6 on."""
    if n < 1:
        return 1.0
    return float(stats.wilcoxon(np.arange(1, n + 1)).pvalue)


def min_kendall_p(n: int) -> float:
    """The smallest two-sided p-value of Kendall's tau with n points (a perfect ranking)."""
    if n < 2:
        return 1.0
    return float(stats.kendalltau(np.arange(n), np.arange(n)).pvalue)


def rank_biserial(diffs: Sequence[float]) -> float | None:
    """Matched-pairs rank-biserial correlation: (sum of ranks of positive differences - sum of ranks
    of negative ones) / their total, zeros dropped; +1 when every pair favours the first sample."""
    d = np.asarray(diffs, dtype=float)
    d = d[d != 0]
    if len(d) == 0:
        return None
    ranks = stats.rankdata(np.abs(d))
    plus, minus = ranks[d > 0].sum(), ranks[d < 0].sum()
    return float((plus - minus) / (plus + minus))


def paired_test(a: Sequence[float], b: Sequence[float], higher_is_better: bool = True) -> dict[str, Any]:
    """Wilcoxon signed-rank test of a against b (paired, same length), its effect size, the mean
    difference and the relative change of the mean in %, and a one-word outcome:
    better / worse / noise / inconclusive (the test cannot reach p < ALPHA with these pairs) / none."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    d = x - y
    n, nonzero = len(d), int(np.count_nonzero(d))
    out: dict[str, Any] = {
        "n": n,
        "mean_diff": None,
        "rel_pct": None,
        "statistic": None,
        "p_value": None,
        "rank_biserial": None,
        "min_p": min_wilcoxon_p(nonzero or n),
        "outcome": "none",
    }
    if n == 0:
        return out
    out["mean_diff"] = float(d.mean())
    if y.mean() != 0:
        out["rel_pct"] = float(100.0 * (x.mean() - y.mean()) / abs(y.mean()))
    if nonzero == 0:  # identical in every pair
        out.update(statistic=0.0, p_value=1.0, rank_biserial=0.0)
    else:
        res = stats.wilcoxon(x, y)
        out.update(statistic=_num(res.statistic), p_value=_num(res.pvalue), rank_biserial=rank_biserial(d))
    if out["min_p"] >= ALPHA:
        out["outcome"] = "inconclusive"
    elif out["p_value"] is not None and out["p_value"] < ALPHA:
        up = (out["rank_biserial"] or 0) > 0
        out["outcome"] = "better" if up == higher_is_better else "worse"
    else:
        out["outcome"] = "noise"
    return out


def describe(test: dict[str, Any], baseline: str, unit: str = "pp") -> str:
    """A comparison in plain words, e.g. "+2.10 pp (+5.3%), n=5 pairs: better than random (p=0.031)"."""
    if test["n"] == 0:
        return f"no pairs with {baseline} to compare"
    head = f"{test['mean_diff']:+.2f} {unit}"
    if test["rel_pct"] is not None:
        head += f" ({test['rel_pct']:+.1f}%)"
    head += f", n={test['n']} pairs"
    p = f"Wilcoxon p={test['p_value']:.3g}, rank-biserial r={test['rank_biserial']:+.2f}"
    if test["outcome"] == "inconclusive":
        return (
            f"{head}: inconclusive, with {test['n']} pairs the Wilcoxon test cannot reach p < {ALPHA} "
            f"(smallest possible p = {test['min_p']:.3g}; {p})"
        )
    if test["outcome"] == "noise":
        return f"{head}: inside the noise ({p})"
    return f"{head}: {test['outcome']} than {baseline} ({p})"


def pair_up(df: pd.DataFrame, metric: str, column: str, a: str, b: str, by: list[str]) -> tuple[np.ndarray, ...]:
    """Values of `metric` for rows with column == a and column == b, matched on the `by` columns
    (e.g. the replicate index): two aligned arrays, pairs with a missing side left out."""
    if df.empty or metric not in df:
        return np.array([]), np.array([])
    left = df.loc[df[column] == a, [*by, metric]]
    right = df.loc[df[column] == b, [*by, metric]]
    m = left.merge(right, on=by, suffixes=("_a", "_b")).dropna(subset=[f"{metric}_a", f"{metric}_b"])
    m = m.sort_values(by)
    return m[f"{metric}_a"].to_numpy(float), m[f"{metric}_b"].to_numpy(float)


def average_ranks(df: pd.DataFrame, metric: str, methods: list[str], block: list[str]) -> dict[str, Any]:
    """Rank the methods within every block (e.g. space x replicate; 1 = highest `metric`, ties
    averaged) and average the ranks per method, over all blocks and per space. Only blocks where
    every method has a value count, so each method is ranked against the same rivals."""
    out: dict[str, Any] = {"n_blocks": 0, "overall": {}, "per_space": {}}
    if df.empty or not methods:
        return out
    wide = df.pivot_table(index=block, columns="method", values=metric, aggfunc="first")
    wide = wide.reindex(columns=methods).dropna()
    if wide.empty:
        return out
    ranks = pd.DataFrame(stats.rankdata(-wide.to_numpy(float), axis=1), index=wide.index, columns=methods)
    out["n_blocks"] = len(ranks)
    out["overall"] = {m: float(ranks[m].mean()) for m in methods}
    if "space" in block:  # in the rows' order (pivot_table sorts its index)
        present = set(ranks.index.get_level_values("space"))
        for space in (s for s in dict.fromkeys(df["space"]) if s in present):
            g = ranks.xs(space, level="space")
            out["per_space"][space] = {"n_blocks": len(g), **{m: float(g[m].mean()) for m in methods}}
    return out


def precision_at_k(pred: Sequence[float], true: Sequence[float], k: int | None = None) -> float:
    """Fraction of the true top-k (highest `true`) that the top-k by `pred` holds; k = max(1, n // 4)."""
    p, t = np.asarray(pred, dtype=float), np.asarray(true, dtype=float)
    k = max(1, len(t) // 4) if k is None else k
    top_true = set(np.argsort(-t, kind="stable")[:k].tolist())
    top_pred = set(np.argsort(-p, kind="stable")[:k].tolist())
    return len(top_true & top_pred) / k


def _kendall(x: np.ndarray, y: np.ndarray) -> float:
    return float(stats.kendalltau(x, y).statistic)


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    return float(stats.spearmanr(x, y).statistic)


def _bootstrap_ci(x: np.ndarray, y: np.ndarray, fn: Callable, rng: np.random.Generator) -> tuple[Any, Any]:
    """95% percentile bootstrap interval of fn(x, y) over resampled pairs; resamples where fn is
    undefined (all ties) are left out."""
    res = stats.bootstrap(
        (x, y),
        fn,
        paired=True,
        vectorized=False,
        n_resamples=N_BOOT,
        method="percentile",
        confidence_level=CONFIDENCE,
        rng=rng,
    )
    dist = np.asarray(res.bootstrap_distribution, dtype=float)
    if not np.isfinite(dist).any():
        return None, None
    lo, hi = np.nanpercentile(dist, [100 * (1 - CONFIDENCE) / 2, 100 * (1 + CONFIDENCE) / 2])
    return float(lo), float(hi)


def correlation(pred: Sequence[Any], true: Sequence[Any]) -> dict[str, Any]:
    """Kendall's tau (and p) of two paired samples, None where undefined (fewer than 2 points, or
    no spread in one of them)."""
    x, y = np.array([_num(v) for v in pred], dtype=float), np.array([_num(v) for v in true], dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    out: dict[str, Any] = {"n": len(x), "tau": None, "p_value": None}
    if len(x) >= 2 and np.ptp(x) > 0 and np.ptp(y) > 0:
        res = stats.kendalltau(x, y)
        out["tau"], out["p_value"] = _num(res.statistic), _num(res.pvalue)
    return out


def ranking_quality(pred: Sequence[Any], true: Sequence[Any], rng: np.random.Generator) -> dict[str, Any]:
    """How well `pred` (supernet accuracy) ranks archs by `true` (standalone accuracy): Kendall's tau,
    Spearman's rho and precision@k, each with a 95% bootstrap interval (pairs resampled with `rng`)."""
    x, y = np.array([_num(v) for v in pred], dtype=float), np.array([_num(v) for v in true], dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = len(x)
    k = max(1, n // 4)
    out: dict[str, Any] = {"n": n, "k": k}
    for name in ("kendall_tau", "spearman_rho", "precision_at_k"):
        out |= {name: None, f"{name}_ci_low": None, f"{name}_ci_high": None}
    out |= {"kendall_p": None, "spearman_p": None}
    if n == 0:
        return out
    out["precision_at_k"] = precision_at_k(x, y, k)
    defined = n >= 2 and np.ptp(x) > 0 and np.ptp(y) > 0
    if defined:
        kt, sr = stats.kendalltau(x, y), stats.spearmanr(x, y)
        out |= {
            "kendall_tau": _num(kt.statistic),
            "kendall_p": _num(kt.pvalue),
            "spearman_rho": _num(sr.statistic),
            "spearman_p": _num(sr.pvalue),
        }
    if n >= 3:
        fns = {"precision_at_k": lambda a, b: precision_at_k(a, b, k)}
        if defined:
            fns |= {"kendall_tau": _kendall, "spearman_rho": _spearman}
        for name, fn in fns.items():
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = _bootstrap_ci(x, y, fn, rng)
    return out
