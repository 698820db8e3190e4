"""What a stage may log. Stages see only this small protocol; the MLflow-backed tracker lives in
`nasstudy.mlflow_tracking` and the stage runner picks it. Tests use `MemoryTracker`."""

from __future__ import annotations

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
