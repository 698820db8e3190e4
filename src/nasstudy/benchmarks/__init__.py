"""Benchmarks apart from the study: the stages of the tabular (NAS-Bench-201 style) benchmarks that
workflow/bench/*.smk runs. Each rule there names its module here (`stage=`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nasstudy.utils import save_png


def finish_curve_plot(fig: Any, ax: Any, xlabel: str, ylabel: str, title: str, path: str | Path) -> None:
    """Label, grid and legend of a benchmark's curves-with-bands figure, then save it as reproducible PNG."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    save_png(fig, path)
