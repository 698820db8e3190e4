"""transfer: how well the searched architecture carries over to detection and segmentation.

The retrained net (weights loaded from `model.pt`) becomes the backbone of a torchvision detector
or segmentation head through an FPN, is fine-tuned on the scenes' train split and scored on their
val split (nasstudy.transfer). Wall times go to timing.json, never to metrics.json.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nasstudy.tracking import Tracker
from nasstudy.training import MEAN, STD, resolve_device
from nasstudy.transfer.backbone import load_retrained
from nasstudy.utils import make_rng, seed_torch, write_json

STAGE = "transfer"
TASKS = ("detection", "segmentation")


def load_scenes(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of a scenes npz (images, masks, boxes, box_labels, box_image) in memory."""
    with np.load(path) as d:
        return {k: d[k] for k in d.files}


def run(
    inputs: dict[str, Path], outputs: dict[str, Path], params: dict, wildcards: dict[str, str], tracker: Tracker
) -> None:
    """Inputs scenes_train, scenes_val, model; outputs metrics, timing."""
    task = wildcards["task"]
    if task not in TASKS:
        raise ValueError(f"unknown transfer task {task!r}; expected one of {TASKS}")
    names = [STAGE, task, wildcards["space"], wildcards["method"]]
    seed = int(params["seed"])
    seed_torch(seed, *names, threads=int(params["threads"]))
    rng = make_rng(seed, *names)  # batch order and flips
    device = resolve_device(params["device"])
    cfg = dict(params["transfer"][task])
    tracker.log_params({f"{task}.{k}": v for k, v in cfg.items()})

    net, _ = load_retrained(inputs["model"])
    num_classes = int(params["space"]["num_classes"])
    train, val = load_scenes(inputs["scenes_train"]), load_scenes(inputs["scenes_val"])
    if task == "detection":
        from nasstudy.transfer.detection import run_detection as run_task
    else:
        from nasstudy.transfer.segmentation import run_segmentation as run_task
    metrics, timing = run_task(net, train, val, num_classes, cfg, rng, tracker, device, [MEAN] * 3, [STD] * 3)
    write_json(outputs["metrics"], metrics)
    write_json(outputs["timing"], timing)
    tracker.log_metrics(metrics)
    tracker.log_metrics(timing)
