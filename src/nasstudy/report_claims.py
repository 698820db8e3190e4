"""The report's comparisons and the papers' claims they test.

Comparisons pair replicates: method vs random search in the same space (pair = replicate index),
and an evolved space vs `initial` (pair = method x replicate). Each claim names what it measures,
how many pairs or points, the test, and a verdict: supported, not supported, or inconclusive when
the test cannot reach p < 0.05 with that n.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from nasstudy.report_stats import ALPHA, correlation, describe, min_kendall_p, pair_up, paired_test

BASELINE = "random"
SUPPORTED, NOT_SUPPORTED, TOO_FEW = "supported", "not supported", "inconclusive (n too small)"


def vs_random(reps: pd.DataFrame, spaces: list[str], methods: list[str], metric: str = "test_acc") -> list[dict]:
    """Per space and method (random itself left out): the paired test against random search."""
    out = []
    if BASELINE not in methods:
        return out
    for space in spaces:
        df = reps[reps["space"] == space]
        for method in methods:
            if method == BASELINE:
                continue
            test = paired_test(*pair_up(df, metric, "method", method, BASELINE, ["rep"]))
            out.append(
                {
                    "space": space,
                    "method": method,
                    "metric": metric,
                    "test": test,
                    "words": f"{method} vs random in {space}: " + describe(test, BASELINE),
                }
            )
    return out


def evolved_vs_initial(reps: pd.DataFrame, evolved: list[str], metric: str = "test_acc") -> list[dict]:
    """Per evolved space: its retrained accuracy against `initial`'s, paired by method and replicate."""
    out = []
    for space in evolved:
        test = paired_test(*pair_up(reps, metric, "space", space, "initial", ["method", "rep"]))
        out.append(
            {
                "space": space,
                "metric": metric,
                "test": test,
                "words": f"{space} vs initial: " + describe(test, "initial"),
            }
        )
    return out


def verdict(outcome: str) -> str:
    """A paired test's outcome as a claim's verdict (the claim says the first sample is better)."""
    if outcome in ("inconclusive", "none"):
        return TOO_FEW
    return SUPPORTED if outcome == "better" else NOT_SUPPORTED


def _paired_claim(claim: str, measurement: str, test: dict[str, Any]) -> dict[str, Any]:
    p = "—" if test["p_value"] is None else f"{test['p_value']:.3g}"
    detail = "" if test["mean_diff"] is None else f"; mean difference {test['mean_diff']:+.2f}, p={p}"
    return {
        "claim": claim,
        "measurement": measurement + detail,
        "n": test["n"],
        "test": "Wilcoxon signed-rank, two-sided",
        "verdict": verdict(test["outcome"]),
    }


def _rank_claim(claim: str, measurement: str, cor: dict[str, Any]) -> dict[str, Any]:
    n = cor["n"]
    if cor["tau"] is None or min_kendall_p(n) >= ALPHA:
        v = TOO_FEW
    else:
        v = SUPPORTED if cor["tau"] > 0 and cor["p_value"] < ALPHA else NOT_SUPPORTED
    detail = "" if cor["tau"] is None else f"; tau={cor['tau']:+.2f}, p={cor['p_value']:.3g}"
    return {
        "claim": claim,
        "measurement": measurement + detail,
        "n": n,
        "test": "Kendall's tau, two-sided",
        "verdict": v,
    }


def claims(reps: pd.DataFrame, methods: list[str], evolved: list[str]) -> list[dict[str, Any]]:
    """Every headline claim of the papers that this study's results can test."""
    out = []
    for space in evolved:
        test = paired_test(*pair_up(reps, "test_acc", "space", space, "initial", ["method", "rep"]))
        out.append(
            _paired_claim(
                f"Space evolution ({space}) improves the search space",
                f"retrained test acc, {space} minus initial, pairs = method x replicate",
                test,
            )
        )
    if {"weaknas", "rea"} <= set(methods):
        test = paired_test(
            *pair_up(reps, "queries_to_best", "method", "weaknas", "rea", ["space", "rep"]), higher_is_better=False
        )
        out.append(
            _paired_claim(
                "WeakNAS needs fewer queries than REA to reach its best arch",
                "queries to best, WeakNAS minus REA, pairs = space x replicate",
                test,
            )
        )
    for method, name in (("relativenas", "RelativeNAS"), ("ganas", "GA-NAS")):
        if {method, BASELINE} <= set(methods):
            test = paired_test(*pair_up(reps, "test_acc", "method", method, BASELINE, ["space", "rep"]))
            out.append(
                _paired_claim(
                    f"{name} beats random search at equal budget",
                    f"retrained test acc, {name} minus random (same query budget), pairs = space x replicate",
                    test,
                )
            )
    first = reps[reps["rep"] == 0]
    for col, task in (("det_map", "detection mAP"), ("seg_miou", "segmentation mIoU")):
        if col in first and first[col].notna().any():
            both = first.dropna(subset=["test_acc", col])
            out.append(
                _rank_claim(
                    f"Transfer ranks follow classification ranks ({task.split()[0]})",
                    f"rank agreement of retrained test acc and {task} over space x method (replicate 0)",
                    correlation(both["test_acc"], both[col]),
                )
            )
    return out
