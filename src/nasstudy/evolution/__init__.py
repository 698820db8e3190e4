"""Space-evolution methods of the pipeline: one module each, one line each in `EVOLUTION` (like
`nasstudy.methods.METHODS`).

Each entry names a module's `SpaceEvolution`, imported on first use, so the evolve_space job of one
method imports only that method's modules. The table variants of the bench_space study are
`table_evolution.GENERATIONS` (one module, no torch; `table_generation(name)`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from nasstudy.utils import resolve

EVOLUTION: dict[str, str] = {
    "nse": "nasstudy.evolution.nse_supernet:NSE",
    "autospace": "nasstudy.evolution.autospace_supernet:AUTOSPACE",
}

FRONT_COLUMNS = ["arch", "flops", "params", "acc", "on_front"]  # front.csv, every method


class RoundResult(Protocol):
    """What every method's round returns (NSEResult, AutoSpaceResult): the next state, per-epoch and
    summary metrics, the trained supernet and its architecture logits."""

    state: dict
    epochs: list[dict]
    summary: dict
    supernet: Any
    alpha: Any


@dataclass(frozen=True)
class RoundFiles:
    """What a round writes besides space_state.json and metrics.json: the rows of front.csv
    (FRONT_COLUMNS) and op_stats.csv (`op_stats_columns`), and the entries it adds to the model file."""

    front: list[dict]
    op_stats: list[dict]
    op_stats_columns: list[str]
    model: dict


@dataclass(frozen=True)
class SpaceEvolution:
    """What the evolve_space stage needs of a method: its config class (`from_params(section)`,
    `to_params()`), its round function (state, space_cfg, train, val, cfg, train_cfg, rng=, batch_gen=,
    tracker=, device=, channels_last=, desc=, checkpoint=, precision=) and the files of a result."""

    config: type
    run: Callable[..., RoundResult]
    files: Callable[[Any], RoundFiles]


def evolution_method(name: str) -> SpaceEvolution:
    """Space-evolution method `name`, imported now."""
    return resolve(EVOLUTION, name, "evolution method")


def rounded(x: float, nd: int = 6) -> float | None:
    """Rounded for stable bytes; NaN (an epoch without an architecture step) becomes null."""
    return None if x != x else round(float(x), nd)


__all__ = ["EVOLUTION", "FRONT_COLUMNS", "RoundFiles", "RoundResult", "SpaceEvolution", "evolution_method", "rounded"]
