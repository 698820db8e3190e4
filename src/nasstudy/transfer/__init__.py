"""Transfer tasks: one module each, one line each in `TASKS` (like `nasstudy.methods.METHODS`).

Each entry names a module's `TransferTask`, imported on first use, so a detection job never imports
the segmentation heads and the other way round.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from nasstudy.utils import resolve

TASKS: dict[str, str] = {
    "detection": "nasstudy.transfer.detection:DETECTION",
    "segmentation": "nasstudy.transfer.segmentation:SEGMENTATION",
}


@dataclass(frozen=True)
class TransferTask:
    """What the transfer stage needs of a task: `run(net, train, val, class_names, cfg, rng, tracker,
    device, mean, std, examples=, checkpoint=, precision=) -> (metrics, timing)`, and the MLflow prefix
    of the per-class values in metrics["per_class"] (ap.<class>, iou.<class>)."""

    run: Callable[..., tuple[dict, dict[str, float]]]
    per_class_prefix: str


def transfer_task(name: str) -> TransferTask:
    """Task `name`, imported now."""
    return resolve(TASKS, name, "transfer task")


__all__ = ["TASKS", "TransferTask", "transfer_task"]
