"""transfer: how well the searched architecture carries over to detection and segmentation.

The retrained net (weights loaded from `model.pt`) becomes the backbone of a torchvision detector
or segmentation head through an FPN, is fine-tuned on the scenes' train split and scored on their
val split (nasstudy.transfer). Wall times go to timing.json, never to metrics.json.

The classes come from the scenes: `class_names` in the npz (label k is `class_names[k - 1]`, 0 is
background), or, for scenes files written before that array existed, `space.num_classes` from params
with names `class_1..class_C`. metrics.json holds the scalar metrics and `per_class` (AP per category
for detection, IoU per class for segmentation); examples.png draws the first val scenes' predictions.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np

from nasstudy.checkpoint import NO_CHECKPOINT, Checkpoint
from nasstudy.tracking import Tracker
from nasstudy.training import MEAN, STD, MixedPrecision, resolve_device
from nasstudy.transfer import transfer_task
from nasstudy.transfer.backbone import load_retrained
from nasstudy.utils import corrupt, make_rng, seed_torch, write_json

STAGE = "transfer"


def load_scenes(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of a scenes npz (images, masks, boxes, box_labels, box_image, and class_names
    where written) in memory. No pickle: class_names is a numpy unicode array."""
    try:
        with np.load(path, allow_pickle=False) as d:
            return {k: d[k] for k in d.files}
    except (zipfile.BadZipFile, EOFError, ValueError) as e:
        raise corrupt(path, "a readable scenes npz", e) from None


def scene_class_names(train: dict[str, np.ndarray], val: dict[str, np.ndarray], fallback: int) -> list[str]:
    """Object class names (label k is names[k - 1]) from the scenes' `class_names`, or, when neither
    file has that array, `class_1..class_{fallback}` (the params' class count)."""
    found = [[str(n) for n in d["class_names"].tolist()] for d in (train, val) if "class_names" in d]
    if not found:
        return [f"class_{k}" for k in range(1, fallback + 1)]
    if len(found) == 2 and found[0] != found[1]:
        raise ValueError(f"scenes_train and scenes_val have different class_names: {found[0]} vs {found[1]}")
    if not found[0]:
        raise ValueError("scenes class_names is empty: the scenes need at least one object class")
    return found[0]


def mlflow_names(prefix: str, per_class: dict[str, float]) -> dict[str, float]:
    """Per-class values as MLflow metrics `prefix.<name>`, the name reduced to [A-Za-z0-9_.-]; a name
    that collides after that gets `_2`, `_3`, ... (in sorted-name order, so always the same)."""
    out: dict[str, float] = {}
    for name in sorted(per_class):
        key = f"{prefix}.{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}"
        base, i = key, 1
        while key in out:
            i += 1
            key = f"{base}_{i}"
        out[key] = float(per_class[name])
    return out


def run(
    inputs: dict[str, Path],
    outputs: dict[str, Path],
    params: dict,
    wildcards: dict[str, str],
    tracker: Tracker,
    checkpoint: Checkpoint = NO_CHECKPOINT,
) -> None:
    """Inputs scenes_train, scenes_val, model; outputs metrics, timing, examples. Fine-tuning
    checkpoints after every epoch; a rerun after a crash continues from the last one."""
    task = wildcards["task"]
    spec = transfer_task(task)
    names = [STAGE, task, wildcards["space"], wildcards["method"]]
    seed = int(params["seed"])
    seed_torch(seed, *names, threads=int(params["threads"]))
    rng = make_rng(seed, *names)  # batch order and flips
    device = resolve_device(params["device"])
    cfg = dict(params["transfer"][task])
    tracker.log_params({f"{task}.{k}": v for k, v in cfg.items()})

    net, _ = load_retrained(inputs["model"])
    train, val = load_scenes(inputs["scenes_train"]), load_scenes(inputs["scenes_val"])
    class_names = scene_class_names(train, val, int(params["space"]["num_classes"]))
    tracker.log_params({"scene_classes": len(class_names)})
    metrics, timing = spec.run(
        net,
        train,
        val,
        class_names,
        cfg,
        rng,
        tracker,
        device,
        [MEAN] * 3,
        [STD] * 3,
        examples=outputs["examples"],
        checkpoint=checkpoint,
        precision=MixedPrecision(device, bool(params.get("amp", False))),
    )
    write_json(outputs["metrics"], metrics)
    write_json(outputs["timing"], timing)
    tracker.log_metrics({k: v for k, v in metrics.items() if k != "per_class"})
    tracker.log_metrics(mlflow_names(spec.per_class_prefix, metrics["per_class"]))
    tracker.log_metrics(timing)
    tracker.log_artifact(outputs["examples"])
