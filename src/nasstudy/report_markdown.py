"""summary.md, the report a person reads, and its HTML rendering (summary.html, which the Snakemake
HTML report embeds).

Numbers are shown as `mean [95% CI]` over replicates; with one replicate there is no interval and
the text says so instead of showing a spread it cannot measure.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt

from nasstudy.report_stats import ALPHA, N_BOOT
from nasstudy.report_tables import METRICS
from nasstudy.utils import atomic_write_bytes

HTML_HEAD = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:70em;margin:auto;padding:1em}}
table{{border-collapse:collapse;margin:1em 0}}th,td{{border:1px solid #ccc;padding:.2em .5em}}
td{{text-align:right}}td:first-child,td:nth-child(2){{text-align:left}}</style></head><body>
"""


def fmt(v: Any, col: str = "") -> str:
    if v is None:
        return "—"
    if col.startswith("params_m"):
        return f"{v:.2f}M" if v >= 1 else f"{v * 1e3:.1f}K"
    if col.startswith("queries") and isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def cell(row: dict[str, Any], col: str) -> str:
    """`mean [ci_low, ci_high]`, or only the mean when there is no interval (one value) or no spread."""
    mean = row[f"{col}_mean"]
    if mean is None:
        return "—"
    if row[f"{col}_ci_low"] is None or row[f"{col}_ci_low"] == row[f"{col}_ci_high"]:  # one value, or no spread
        return fmt(mean, col)
    return f"{fmt(mean, col)} [{fmt(row[f'{col}_ci_low'], col)}, {fmt(row[f'{col}_ci_high'], col)}]"


def main_table(cells: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| Space | Method | n | " + " | ".join(h for _, h in METRICS) + " |",
        "|---|---|---:|" + "---:|" * len(METRICS),
    ]
    for r in cells:
        lines.append(
            f"| {r['space']} | {r['method']} | {r['n']} | " + " | ".join(cell(r, c) for c, _ in METRICS) + " |"
        )
    if not cells:
        lines.append("| — | — | 0 | " + " | ".join("—" for _ in METRICS) + " |")
    n_max = max((r["n"] for r in cells), default=0)
    lines += [
        "",
        "n: replicates (search seed and retrain seed). Each cell: mean over replicates and, in brackets, the 95% "
        "t interval of the mean, clipped to the values the metric can take (a count at least 1, a size at least 0, "
        "a percentage at most 100). Supernet acc: best accuracy the search found with inherited supernet weights "
        "(val split); test acc: the same arch retrained from scratch (test split); det. mAP and seg. mIoU: "
        "replicate 0's arch as a backbone. — means not available.",
    ]
    if n_max <= 1:
        lines += [
            "",
            "**One replicate per cell: no confidence intervals and no paired tests are possible; "
            "differences between rows may be seed noise.**",
        ]
    return lines


def _p(v: Any) -> str:
    return "—" if v is None else f"{v:.3g}"


def comparison_lines(comparisons: list[dict], evolved: list[dict], ranks: dict[str, Any]) -> list[str]:
    lines = ["", "## Against random search (paired by replicate)", ""]
    if not comparisons:
        lines.append("No random-search baseline in this study.")
    else:
        lines += [
            "| Space | Method | n pairs | Δ test acc (pp) | vs random (%) | Wilcoxon p | rank-biserial r | outcome |",
            "|---|---|---:|---:|---:|---:|---:|---|",
        ]
        for c in comparisons:
            t = c["test"]
            rel = "—" if t["rel_pct"] is None else f"{t['rel_pct']:+.1f}"
            diff = "—" if t["mean_diff"] is None else f"{t['mean_diff']:+.2f}"
            rb = "—" if t["rank_biserial"] is None else f"{t['rank_biserial']:+.2f}"
            lines.append(
                f"| {c['space']} | {c['method']} | {t['n']} | {diff} | {rel} | {_p(t['p_value'])} | {rb} "
                f"| {t['outcome']} |"
            )
        lines += [
            "",
            f"Outcome: better / worse = Wilcoxon signed-rank p < {ALPHA} (two-sided); noise = not "
            f"significant; inconclusive = with so few pairs the test cannot reach p < {ALPHA} "
            "(it needs at least 6 non-tied pairs). Rank-biserial r: +1 when the method wins every pair.",
            "",
        ]
        lines += [f"- {c['words']}" for c in comparisons]
    lines += ["", "## Average rank (1 = best retrained test acc)", ""]
    if not ranks["overall"]:
        lines.append("No block (space x replicate) with a result for every method.")
    else:
        spaces = list(ranks["per_space"])
        lines += ["| Method | all spaces | " + " | ".join(spaces) + " |", "|---|---:|" + "---:|" * len(spaces)]
        for m, v in sorted(ranks["overall"].items(), key=lambda kv: kv[1]):
            lines.append(f"| {m} | {v:.2f} | " + " | ".join(f"{ranks['per_space'][s][m]:.2f}" for s in spaces) + " |")
        lines += ["", f"Methods ranked within each space x replicate ({ranks['n_blocks']} blocks), ties averaged."]
    if evolved:
        lines += ["", "## Evolved spaces vs initial (paired by method x replicate)", ""]
        lines += [f"- {e['words']}" for e in evolved]
    return lines


def _ci(r: dict, name: str) -> str:
    if r[name] is None:
        return "—"
    if r[f"{name}_ci_low"] is None:
        return f"{r[name]:.3f}"
    return f"{r[name]:.3f} [{r[f'{name}_ci_low']:.3f}, {r[f'{name}_ci_high']:.3f}]"


def ranking_lines(ranking: dict[str, dict], winners: dict[str, Any]) -> list[str]:
    lines = ["", "## Ranking quality of the supernet", ""]
    if ranking:
        lines += [
            "| Space | n archs | Kendall tau | Spearman rho | precision@k | k |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for space, r in ranking.items():
            lines.append(
                f"| {space} | {r['n']} | {_ci(r, 'kendall_tau')} | {_ci(r, 'spearman_rho')} "
                f"| {_ci(r, 'precision_at_k')} | {r['k']} |"
            )
        lines += [
            "",
            "A fixed, seeded sample of random archs per space, each retrained from scratch: supernet accuracy "
            "against standalone test accuracy, free of the selection bias of search winners. Brackets: 95% "
            f"percentile bootstrap interval ({N_BOOT} resamples of the archs). precision@k: the fraction of the "
            "k best archs (k = n // 4, at least 1) that the supernet's top k holds.",
            "",
        ]
    else:
        lines += ["No ranking sample in this study (no archs retrained only to measure ranking quality).", ""]
    if winners["tau"] is None:
        lines.append(
            f"- Search winners (selection-biased, RelativeNAS excluded): Kendall tau undefined (n={winners['n']})."
        )
    else:
        lines.append(
            f"- Search winners (selection-biased, RelativeNAS excluded): Kendall tau = {winners['tau']:.3f} "
            f"(n={winners['n']}, p={winners['p_value']:.3g}). Winners all sit near the top of the supernet's "
            "ranking, so their tau says little about the whole space."
        )
    lines.append(
        "- RelativeNAS's supernet accuracies come from its own jointly trained weights, not the space's "
        "supernet, so they are left out of every correlation."
    )
    return lines


def claim_lines(claims: list[dict]) -> list[str]:
    lines = ["", "## Claims of the papers, tested", ""]
    if not claims:
        return [*lines, "No claim can be tested with the methods and spaces of this study."]
    lines += ["| Claim | Measurement | n | Test | Verdict |", "|---|---|---:|---|---|"]
    lines += [f"| {c['claim']} | {c['measurement']} | {c['n']} | {c['test']} | **{c['verdict']}** |" for c in claims]
    lines += [
        "",
        f"supported: significant (p < {ALPHA}) in the claimed direction; not supported: no significant "
        "difference, or one in the other direction; inconclusive: with this n the test cannot reach "
        f"p < {ALPHA} (more replicates are needed).",
    ]
    return lines


def figure_lines(spread: dict[str, dict], fronts: list[dict], extra: Sequence[str] = ()) -> list[str]:
    """The figures list, with the numbers behind them; `extra` adds lines (transfer examples)."""
    lines = [
        "",
        "## Figures",
        "",
        "- correlation.png: supernet vs retrained accuracy, the ranking sample and the search winners.",
        "- search.png: best-so-far supernet accuracy against queries, one panel per space, mean over "
        "replicates with a min-max band.",
    ]
    for space, s in spread.items():
        lines.append(
            f"- pareto.png: {space}, {s['n']} random archs: acc mean {fmt(s['mean'])}, std {fmt(s['std'])}, "
            f"range {fmt(s['min'])}–{fmt(s['max'])}."
        )
    for f in fronts:
        lines.append(
            f"- evolution, {f['evolution']} gen {f['gen']}: {f['n_front']} of {f['n']} archs on the front, "
            f"best acc {fmt(f['best_acc'])}."
        )
    return [*lines, *extra]


def write_markdown(path: Path, blocks: Sequence[Sequence[str]]) -> None:
    lines = ["# NAS study summary", ""]
    for b in blocks:
        lines += list(b)
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


def write_html(path: Path, markdown: str, title: str = "NAS study summary") -> None:
    """summary.md rendered as one standalone HTML page (tables on)."""
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    atomic_write_bytes(path, (HTML_HEAD.format(title=title) + body + "</body></html>\n").encode())
