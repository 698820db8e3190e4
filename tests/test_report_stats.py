"""The report's statistics against scipy and hand-computed values on fixed inputs, and the claim verdicts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from nasstudy import report_claims
from nasstudy import report_stats as st


def test_mean_ci_is_the_t_interval() -> None:
    s = st.mean_ci([1, 2, 3, 4, 5])
    assert s["n"] == 5 and s["mean"] == 3.0 and s["std"] == pytest.approx(np.sqrt(2.5))
    # 3 +- t(0.975, 4) * sqrt(2.5) / sqrt(5), t(0.975, 4) = 2.776445
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((3 - 2.776445 * np.sqrt(0.5), 3 + 2.776445 * np.sqrt(0.5)))
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((1.036757, 4.963243), abs=1e-6)


def test_mean_ci_is_clipped_to_the_metrics_range() -> None:
    wide = st.mean_ci([1, 2, 30])  # t interval about [-38, 60]
    assert wide["ci_low"] < 0
    clipped = st.mean_ci([1, 2, 30], (1, None))
    assert clipped["ci_low"] == 1 and clipped["ci_high"] == pytest.approx(wide["ci_high"])
    assert st.mean_ci([90, 99, 60], (0, 100))["ci_high"] == 100


def test_mean_ci_with_one_value_has_no_interval() -> None:
    assert st.mean_ci([7.5]) == {"n": 1, "mean": 7.5, "std": None, "ci_low": None, "ci_high": None}
    assert st.mean_ci([None, float("nan")])["n"] == 0
    same = st.mean_ci([2.0, 2.0, 2.0])
    assert same["std"] == 0 and same["ci_low"] == same["ci_high"] == 2.0


def test_min_p_says_when_a_test_cannot_reach_significance() -> None:
    assert st.min_wilcoxon_p(5) == pytest.approx(0.0625) and st.min_wilcoxon_p(6) == pytest.approx(0.03125)
    assert st.min_wilcoxon_p(0) == 1.0
    assert st.min_kendall_p(4) >= 0.05 > st.min_kendall_p(5)


def test_paired_test_matches_scipy_and_the_rank_biserial_by_hand() -> None:
    b = np.array([10.0, 11, 12, 13, 14, 15, 16])
    a = b + np.array([1, 2, 3, -4, 5, 6, 7])
    t = st.paired_test(a, b)
    ref = stats.wilcoxon(a, b)
    assert t["n"] == 7 and t["p_value"] == pytest.approx(ref.pvalue) and t["statistic"] == pytest.approx(ref.statistic)
    # ranks of |d| are 1..7: positive 1+2+3+5+6+7 = 24, negative 4 -> (24 - 4) / 28
    assert t["rank_biserial"] == pytest.approx(20 / 28)
    assert t["mean_diff"] == pytest.approx(20 / 7) and t["rel_pct"] == pytest.approx(100 * (20 / 7) / 13)
    assert t["outcome"] == ("better" if ref.pvalue < 0.05 else "noise")
    assert st.paired_test(b, a)["rank_biserial"] == pytest.approx(-20 / 28)


def test_paired_test_outcomes() -> None:
    few = st.paired_test([2, 3, 4], [1, 1, 1])
    assert few["outcome"] == "inconclusive" and few["rank_biserial"] == 1.0
    assert "cannot reach p < 0.05" in st.describe(few, "random")
    many = st.paired_test(np.arange(10) + 5.0, np.arange(10) + 0.5 * np.arange(10) % 3)
    assert many["outcome"] == "better" and "better than random" in st.describe(many, "random")
    assert st.paired_test(np.arange(10.0), np.arange(10.0) + 3)["outcome"] == "worse"
    # fewer queries is better: lower_is_better flips the word, not the numbers
    fewer = st.paired_test(np.full(8, 3.0), np.arange(8) + 5.0, higher_is_better=False)
    assert fewer["outcome"] == "better" and fewer["rank_biserial"] == -1.0
    same = st.paired_test(np.ones(8), np.ones(8))
    assert same["p_value"] == 1.0 and same["outcome"] == "noise" and "inside the noise" in st.describe(same, "x")
    assert st.paired_test([], [])["outcome"] == "none"
    assert st.paired_test([1.0, np.nan], [2.0, 3.0])["n"] == 1


def test_pair_up_matches_by_replicate() -> None:
    df = pd.DataFrame({"method": ["a", "a", "b", "b", "b"], "rep": [0, 1, 2, 1, 0], "v": [1, 2, 30, 20, 10]})
    a, b = st.pair_up(df, "v", "method", "a", "b", ["rep"])
    assert a.tolist() == [1, 2] and b.tolist() == [10, 20]


def test_average_ranks_by_hand() -> None:
    df = pd.DataFrame(
        {
            "space": ["s"] * 6 + ["t"] * 3,
            "rep": [0, 0, 0, 1, 1, 1, 0, 0, 0],
            "method": ["x", "y", "z"] * 3,
            "acc": [3, 2, 1, 1, 2, 2, 5, 4, None],  # t/0 lacks z: that block does not count
        }
    )
    r = st.average_ranks(df, "acc", ["x", "y", "z"], ["space", "rep"])
    assert r["n_blocks"] == 2
    # block s/0: x 1, y 2, z 3; block s/1: y and z tie for 1st (1.5 each), x 3
    assert r["overall"] == {"x": 2.0, "y": 1.75, "z": 2.25}
    assert list(r["per_space"]) == ["s"] and r["per_space"]["s"]["n_blocks"] == 2


def test_precision_at_k() -> None:
    true = [10, 9, 8, 7, 6, 5, 4, 3]  # top 2: items 0 and 1
    assert st.precision_at_k([1, 2, 3, 4, 5, 6, 7, 8], true) == 0.0  # k = 8 // 4 = 2
    assert st.precision_at_k([9, 1, 8, 0, 0, 0, 0, 0], true) == 0.5
    assert st.precision_at_k(true, true) == 1.0 and st.precision_at_k([1, 2], [2, 1]) == 0.0  # k = 1


def test_ranking_quality_matches_scipy_and_is_seeded() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(50, 5, 24)
    y = x + rng.normal(0, 4, 24)
    r = st.ranking_quality(x, y, np.random.default_rng(7))
    assert r["n"] == 24 and r["k"] == 6
    assert r["kendall_tau"] == pytest.approx(stats.kendalltau(x, y).statistic)
    assert r["kendall_p"] == pytest.approx(stats.kendalltau(x, y).pvalue)
    assert r["spearman_rho"] == pytest.approx(stats.spearmanr(x, y).statistic)
    assert r["precision_at_k"] == st.precision_at_k(x, y)
    for name in ("kendall_tau", "spearman_rho", "precision_at_k"):
        assert r[f"{name}_ci_low"] <= r[name] <= r[f"{name}_ci_high"], name
    assert st.ranking_quality(x, y, np.random.default_rng(7)) == r
    assert st.ranking_quality(x, y, np.random.default_rng(8))["kendall_tau_ci_low"] != r["kendall_tau_ci_low"]
    small = st.ranking_quality([1, 2], [2, 3], np.random.default_rng(0))
    assert small["kendall_tau"] == 1.0 and small["kendall_tau_ci_low"] is None
    flat = st.ranking_quality([1, 1, 1], [1, 2, 3], np.random.default_rng(0))
    assert flat["kendall_tau"] is None and flat["precision_at_k"] is not None


def test_claim_verdicts() -> None:
    assert report_claims.verdict("better") == "supported"
    assert report_claims.verdict("noise") == report_claims.verdict("worse") == "not supported"
    assert report_claims.verdict("inconclusive") == report_claims.verdict("none") == "inconclusive (n too small)"
    few = report_claims._rank_claim("c", "m", st.correlation([1, 2, 3, 4], [1, 2, 3, 4]))
    assert few["verdict"] == "inconclusive (n too small)" and few["n"] == 4
    up = report_claims._rank_claim("c", "m", st.correlation(range(8), range(8)))
    down = report_claims._rank_claim("c", "m", st.correlation(range(8), range(8, 0, -1)))
    assert up["verdict"] == "supported" and down["verdict"] == "not supported"
