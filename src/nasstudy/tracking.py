"""What a stage may log. Stages see only this small protocol; the MLflow-backed tracker lives in
`nasstudy.mlflow_tracking` and the stage runner picks it. Tests use `MemoryTracker`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol


class Tracker(Protocol):
    def log_params(self, params: dict) -> None: ...
    def log_metric(self, key: str, value: float, step: int | None = None) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: str | Path) -> None: ...


class MemoryTracker:
    """Keeps everything in lists: for tests and for running a stage by hand."""

    def __init__(self) -> None:
        self.params: dict = {}
        self.metrics: list[tuple[str, float, int | None]] = []
        self.artifacts: list[Path] = []

    def log_params(self, params: dict) -> None:
        self.params.update(params)

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        self.metrics.append((key, float(value), step))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        for k, v in metrics.items():
            self.log_metric(k, v, step)

    def log_artifact(self, path: str | Path) -> None:
        self.artifacts.append(Path(path))

    def last(self, key: str) -> float:
        """The last value logged for `key` (KeyError if never logged)."""
        for k, v, _ in reversed(self.metrics):
            if k == key:
                return v
        raise KeyError(key)


def log_cost(tracker: Tracker, cost: Mapping[str, float]) -> None:
    """An arch's `flops` (MACs per image) and `params` from `cost` (best.json, metrics.json) as metrics, so
    runs can be sorted and filtered by them (`metrics.flops < 3e6`); MLflow params are text, not numbers."""
    tracker.log_metrics({k: float(cost[k]) for k in ("flops", "params")})


def log_epoch(
    tracker: Tracker, what: str, epoch: int, epochs: int, metrics: dict[str, float], step: int | None = None
) -> None:
    """One training epoch's metrics (at `step`, default `epoch`) and one line in the job log:
    `[nasstudy] retrain epoch 2/4 train_loss=0.81 val_acc=61.2`, so a long job shows how far it is."""
    tracker.log_metrics(metrics, step=epoch if step is None else step)
    shown = " ".join(f"{k}={v:.4g}" if isinstance(v, int | float) else f"{k}={v}" for k, v in metrics.items())
    print(f"[nasstudy] {what} epoch {epoch}/{epochs} {shown}".rstrip(), flush=True)
