"""Detection transfer: torchvision FCOS or RetinaNet on the searched backbone + FPN, COCO-style mAP.

Sizes suit the default scenes (96 px, objects of about 10-40 px): the pyramid starts at stride 4,
and anchors (RetinaNet) or per-level regression ranges (FCOS) cover 8-64 px boxes. Detectors get
`min_size`/`max_size` from params, so torchvision never resizes scenes to its 800-px default.
"""

from __future__ import annotations

import sys
import time
from functools import partial

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.models.detection import FCOS, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from tqdm import tqdm

from nasstudy.checkpoint import NO_CHECKPOINT, Checkpoint, capture, restore
from nasstudy.tracking import log_epoch
from nasstudy.training import MixedPrecision, finite_loss
from nasstudy.transfer import TransferTask
from nasstudy.transfer.backbone import (
    EXAMPLES,
    FPNBackbone,
    backbone_kw,
    class_legend,
    cosine_sgd,
    example_figure,
    label_colours,
    normalise,
    scene_batches,
)
from nasstudy.utils import save_png

DETECTORS = ("fcos", "retinanet")
# Knobs not in the params file (a params section may override them): small, because the default
# study trains 8 transfer jobs on 2 CPU cores in a few minutes.
DEFAULTS = {
    "fpn_channels": 32,  # FPN width; a multiple of 32 so the heads' GroupNorm(32) fits
    "head_convs": 2,  # FCOS tower depth (torchvision's RetinaNet head is fixed at 4)
    "score_thresh": 0.05,  # low, as for COCO evaluation: mAP needs the low-score tail
    "detections_per_img": 20,  # scenes hold at most a handful of objects
    "freeze_early": True,  # stem + stages below the pyramid frozen (see FPNBackbone)
    "channels_last": True,
    "weight_decay": 1e-4,
    "momentum": 0.9,
    # Per-class AP only for categories with at least this many ground-truth boxes in val: fewer
    # make an AP that a single box swings by tens of points. Not in the params schema: set here.
    "min_instances": 5,
}
EXAMPLE_SCORE = 0.3  # predictions drawn in examples.png: score at least this


def build_detector(
    net: nn.Module, num_classes: int, cfg: dict, image_mean: list[float], image_std: list[float]
) -> nn.Module:
    """A torchvision detector over `num_classes` + 1 labels (0 unused, objects 1..C) on `net`."""
    cfg = {**DEFAULTS, **cfg}
    name = cfg.get("detector", "fcos")
    ch = int(cfg["fpn_channels"])
    backbone = FPNBackbone(net, ch, min_stride=4, extra=LastLevelMaxPool(), **backbone_kw(cfg))
    common = dict(
        min_size=int(cfg["min_size"]),
        max_size=int(cfg["max_size"]),
        image_mean=image_mean,
        image_std=image_std,
        score_thresh=float(cfg["score_thresh"]),
        detections_per_img=int(cfg["detections_per_img"]),
        topk_candidates=200,
    )
    if name == "fcos":
        # FCOS convention: one point per location, anchor size = stride. A level then takes boxes
        # whose farthest side lies 4..8 strides from the point (finest level: anything below).
        sizes = tuple((s,) for s in backbone.strides)
        anchors = AnchorGenerator(sizes, ((1.0,),) * len(sizes))
        head = FCOSHead(ch, 1, num_classes + 1, num_convs=int(cfg["head_convs"]))
        return FCOS(backbone, num_classes + 1, anchor_generator=anchors, head=head, **common)
    if name == "retinanet":
        # Two scales x three ratios per level, 2 and 2.8 strides wide: 8-45 px over strides 4-16.
        sizes = tuple((2 * s, int(round(2 * s * 2**0.5))) for s in backbone.strides)
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
        head = RetinaNetHead(
            ch, anchors.num_anchors_per_location()[0], num_classes + 1, norm_layer=partial(nn.GroupNorm, 32)
        )
        return RetinaNet(backbone, num_classes + 1, anchor_generator=anchors, head=head, **common)
    raise ValueError(f"unknown detector {name!r}; expected one of {DETECTORS}")


def scene_targets(data: dict[str, np.ndarray], idx: np.ndarray) -> list[dict[str, Tensor]]:
    """Per-image `{"boxes", "labels"}` for images `idx` from the flat box arrays of a scenes file."""
    out = []
    for i in idx:
        sel = data["box_image"] == i
        boxes = torch.from_numpy(data["boxes"][sel].astype(np.float32)).reshape(-1, 4)
        labels = torch.from_numpy(data["box_labels"][sel].astype(np.int64))
        ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # torchvision rejects empty boxes
        out.append({"boxes": boxes[ok], "labels": labels[ok]})
    return out


def _flip(images: Tensor, targets: list[dict[str, Tensor]], flip: np.ndarray) -> None:
    """Horizontal flip, in place, of the images (and their boxes) where `flip` is True."""
    width = images.shape[-1]
    for j in np.flatnonzero(flip):
        images[j] = images[j].flip(-1)
        b = targets[j]["boxes"].clone()
        b[:, 0], b[:, 2] = width - targets[j]["boxes"][:, 2], width - targets[j]["boxes"][:, 0]
        targets[j]["boxes"] = b


def _to(targets: list[dict[str, Tensor]], device: torch.device) -> list[dict[str, Tensor]]:
    return [{k: v.to(device) for k, v in t.items()} for t in targets]


def train_detector(
    model: nn.Module,
    data: dict[str, np.ndarray],
    cfg: dict,
    rng: np.random.Generator,
    tracker,
    device: torch.device,
    checkpoint: Checkpoint = NO_CHECKPOINT,
    precision: MixedPrecision | None = None,
) -> list[float]:
    """Fine-tune backbone, FPN and head together (SGD, cosine LR, random flips); per-epoch losses."""
    cfg = {**DEFAULTS, **cfg}
    epochs, bs = int(cfg["epochs"]), int(cfg["batch_size"])
    n = len(data["images"])
    steps = epochs * len(scene_batches(n, bs, np.random.default_rng(0)))
    opt, sched = cosine_sgd(model, float(cfg["lr"]), steps, cfg["momentum"], cfg["weight_decay"])
    model.to(device)
    precision = precision or MixedPrecision(device)
    losses: list[float] = []
    if (saved := checkpoint.load()) is not None:  # continue after the last finished epoch
        restore(saved, model=model, opt=opt, sched=sched, rng=rng, precision=precision)
        losses = saved["losses"]
    for epoch in range(len(losses) + 1, epochs + 1):
        model.train()
        sums: dict[str, float] = {}
        batches = scene_batches(n, bs, rng)
        for idx in tqdm(batches, desc=f"detection epoch {epoch}", file=sys.stderr, mininterval=5):
            images = normalise(data["images"][idx])
            targets = scene_targets(data, idx)
            _flip(images, targets, rng.random(len(idx)) < 0.5)
            # On CPU every op here is deterministic (seed_torch turns deterministic algorithms on).
            # On CUDA the loss's index_put/scatter and the upsampling backward in the FPN are not,
            # so GPU runs may differ in the last digits.
            with precision.autocast():
                parts = model(list(images.to(device)), _to(targets, device))
                loss = sum(parts.values())
            precision.step(loss, opt, clip=(model.parameters(), 10.0))  # early focal/GIoU spikes from scratch heads
            sched.step()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            sums["loss"] = sums.get("loss", 0.0) + finite_loss(loss, f"detection epoch {epoch}/{epochs}")
        means = {f"train_{k}": v / len(batches) for k, v in sums.items()}
        log_epoch(tracker, "detection", epoch, epochs, means)
        losses.append(means["train_loss"])
        checkpoint.save(
            {**capture(model=model, opt=opt, sched=sched, rng=rng, precision=precision), "losses": losses},
            f"epoch {epoch}/{epochs}",
        )
    return losses


@torch.no_grad()
def evaluate_detector(
    model: nn.Module,
    data: dict[str, np.ndarray],
    batch_size: int,
    device: torch.device,
    class_names: list[str] | None = None,
    min_instances: int = DEFAULTS["min_instances"],
) -> dict:
    """COCO mAP, mAP@0.5, mAP@0.75 (percent) with torchmetrics' pycocotools backend, and `per_class`:
    {class name: AP (percent)} for the categories with at least `min_instances` ground-truth boxes.

    Label k is `class_names[k - 1]` (`class_k` where no name is given)."""
    from torchmetrics.detection import MeanAveragePrecision  # slow import: only where used

    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools", class_metrics=True)
    model.to(device).eval()
    counts: dict[int, int] = {}
    for idx in scene_batches(len(data["images"]), batch_size, None):
        preds = model(list(normalise(data["images"][idx]).to(device)))
        targets = scene_targets(data, idx)
        for t in targets:
            for label in t["labels"].tolist():
                counts[label] = counts.get(label, 0) + 1
        metric.update([{k: v.cpu() for k, v in p.items()} for p in preds], targets)
    r = metric.compute()
    # -1 means "no ground truth"; report 0 then, so the value stays a percentage.
    out: dict = {k: round(100.0 * max(0.0, float(r[k])), 4) for k in ("map", "map_50", "map_75")}
    ap = dict(zip(r["classes"].reshape(-1).tolist(), r["map_per_class"].reshape(-1).tolist()))
    out["per_class"] = {
        label_name(k, class_names): round(100.0 * max(0.0, float(ap.get(k, 0.0))), 4)
        for k, n in sorted(counts.items())
        if n >= min_instances
    }
    return out


def label_name(label: int, class_names: list[str] | None) -> str:
    """Name of object label `label` (1-based): `class_names[label - 1]`, or `class_{label}`."""
    if class_names is not None and 1 <= label <= len(class_names):
        return str(class_names[label - 1])
    return f"class_{label}"


@torch.no_grad()
def draw_examples(
    path,
    model: nn.Module,
    data: dict[str, np.ndarray],
    class_names: list[str],
    device: torch.device,
    n: int = EXAMPLES,
    score_thresh: float = EXAMPLE_SCORE,
) -> None:
    """PNG of the first `n` val scenes: ground-truth boxes dashed white, predictions (score >=
    `score_thresh`) in their class colour with name and score. Images are the stored uint8 pixels."""
    from matplotlib.patches import Rectangle

    n = min(n, len(data["images"]))
    idx = np.arange(n)
    model.to(device).eval()
    preds = [{k: v.cpu() for k, v in p.items()} for p in model(list(normalise(data["images"][idx]).to(device)))]
    colours = label_colours(len(class_names))
    fig, axes = example_figure(n, 1, f"detection: predictions (score >= {score_thresh}), ground truth dashed white")
    shown = []
    for ax, i, pred, target in zip(axes, idx, preds, scene_targets(data, idx)):
        ax.imshow(data["images"][i], interpolation="nearest")
        for b in target["boxes"].tolist():
            ax.add_patch(Rectangle((b[0] - 0.5, b[1] - 0.5), b[2] - b[0], b[3] - b[1], fill=False, ec="w", ls="--"))
        keep = pred["scores"] >= score_thresh
        for b, label, score in zip(
            pred["boxes"][keep].tolist(), pred["labels"][keep].tolist(), pred["scores"][keep].tolist()
        ):
            colour = colours[label] if 0 < label < len(colours) else "r"
            ax.add_patch(Rectangle((b[0] - 0.5, b[1] - 0.5), b[2] - b[0], b[3] - b[1], fill=False, lw=1.5, ec=colour))
            text = f"{label_name(label, class_names)} {score:.2f}"
            box = {"facecolor": colour, "alpha": 0.75, "pad": 0.8, "linewidth": 0}
            ax.text(b[0], b[1] - 1, text, fontsize=6, color="w", va="bottom", bbox=box, clip_on=True)
            shown.append(label)
        ax.set_title(f"val scene {i}", fontsize=7)
        ax.axis("off")
    class_legend(fig, colours, class_names, shown)
    save_png(fig, path, dpi=100)


def run_detection(
    net: nn.Module,
    train: dict[str, np.ndarray],
    val: dict[str, np.ndarray],
    class_names: list[str],
    cfg: dict,
    rng: np.random.Generator,
    tracker,
    device: torch.device,
    image_mean: list[float],
    image_std: list[float],
    examples=None,
    checkpoint: Checkpoint = NO_CHECKPOINT,
    precision: MixedPrecision | None = None,
) -> tuple[dict, dict[str, float]]:
    """Build, train and score a detector over `len(class_names)` object classes; draw `examples`
    (a PNG path) when given; returns (metrics, timing)."""
    cfg = {**DEFAULTS, **cfg}
    model = build_detector(net, len(class_names), cfg, image_mean, image_std)
    t0 = time.perf_counter()
    train_detector(model, train, cfg, rng, tracker, device, checkpoint, precision)
    t1 = time.perf_counter()
    metrics = evaluate_detector(model, val, int(cfg["batch_size"]), device, class_names, int(cfg["min_instances"]))
    t2 = time.perf_counter()
    if examples is not None:
        draw_examples(examples, model, val, class_names, device)
    return metrics, {"train_seconds": round(t1 - t0, 3), "eval_seconds": round(t2 - t1, 3)}


DETECTION = TransferTask(run_detection, per_class_prefix="ap")  # MLflow: ap.<class>, the AP per category
