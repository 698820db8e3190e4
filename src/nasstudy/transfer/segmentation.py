"""Segmentation transfer: a torchvision segmentation head on the searched backbone + FPN, mIoU.

Heads: `fcn` (FCNHead) and `deeplabv3` (torchvision's ASPP + DeepLabHead's tail) on the finest
FPN level, `lraspp` (LRASPPHead) on the finest (low) and coarsest (high) levels; logits are
upsampled bilinearly to the scene size. C + 1 classes, 0 = background, as in the masks.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.segmentation.deeplabv3 import ASPP
from torchvision.models.segmentation.fcn import FCNHead
from torchvision.models.segmentation.lraspp import LRASPPHead
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
from nasstudy.utils import save_png, set_deterministic

HEADS = ("fcn", "deeplabv3", "lraspp")
# Knobs not in the params file (a params section may override them), sized for 96-px scenes on CPU.
DEFAULTS = {
    "fpn_channels": 32,
    # torchvision's DeepLabHead is fixed at 256 channels and rates 12/24/36 (for 65-px maps); a
    # 24-px map at stride 4 wants smaller rates, and 256 channels would dwarf the backbone.
    "aspp_channels": 32,
    "atrous_rates": (2, 4, 6),
    "freeze_early": True,  # stem + stages below the pyramid frozen (see FPNBackbone)
    "channels_last": True,
    "weight_decay": 1e-4,
    "momentum": 0.9,
}
EXAMPLE_ALPHA = 0.55  # opacity of the class colours over the image in examples.png


def _deeplab_head(in_ch: int, num_classes: int, width: int, rates: tuple[int, ...]) -> nn.Sequential:
    """DeepLabHead's layout (ASPP, 3x3 conv-BN-ReLU, 1x1 classifier) at a chosen width."""
    return nn.Sequential(
        ASPP(in_ch, list(rates), out_channels=width),
        nn.Conv2d(width, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, num_classes, 1),
    )


class SegmentationNet(nn.Module):
    """Backbone + FPN + head; `forward(x)` gives per-pixel logits at the input size."""

    def __init__(self, net: nn.Module, num_classes: int, cfg: dict) -> None:
        super().__init__()
        cfg = {**DEFAULTS, **cfg}
        self.head_name = cfg.get("head", "fcn")
        ch = int(cfg["fpn_channels"])
        self.backbone = FPNBackbone(net, ch, min_stride=4, extra=None, **backbone_kw(cfg))
        if self.head_name == "fcn":
            self.head: nn.Module = FCNHead(ch, num_classes)
        elif self.head_name == "deeplabv3":
            rates = tuple(int(r) for r in cfg["atrous_rates"])
            self.head = _deeplab_head(ch, num_classes, int(cfg["aspp_channels"]), rates)
        elif self.head_name == "lraspp":
            self.head = LRASPPHead(ch, ch, num_classes, inter_channels=ch)
        else:
            raise ValueError(f"unknown segmentation head {self.head_name!r}; expected one of {HEADS}")

    def forward(self, x: Tensor) -> Tensor:
        levels = list(self.backbone(x).values())
        if self.head_name == "lraspp":
            out = self.head({"low": levels[0], "high": levels[-1]})
        else:
            out = self.head(levels[0])
        # Bilinear upsampling: deterministic on CPU; its backward is not deterministic on CUDA.
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _batch(
    data: dict[str, np.ndarray], idx: np.ndarray, mean: Tensor, std: Tensor, flip: np.ndarray | None = None
) -> tuple[Tensor, Tensor]:
    images = normalise(data["images"][idx])
    masks = torch.from_numpy(data["masks"][idx].astype(np.int64))
    if flip is not None and flip.any():
        f = torch.from_numpy(flip)
        images[f] = images[f].flip(-1)
        masks[f] = masks[f].flip(-1)
    return (images - mean) / std, masks


def train_segmenter(
    model: nn.Module,
    data: dict[str, np.ndarray],
    cfg: dict,
    rng: np.random.Generator,
    tracker,
    device: torch.device,
    mean: Tensor,
    std: Tensor,
    checkpoint: Checkpoint = NO_CHECKPOINT,
    precision: MixedPrecision | None = None,
) -> list[float]:
    """Fine-tune the whole model with pixel cross-entropy (SGD, cosine LR, random flips)."""
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
        total, batches = 0.0, scene_batches(n, bs, rng)
        for idx in tqdm(batches, desc=f"segmentation epoch {epoch}", file=sys.stderr, mininterval=5):
            x, y = _batch(data, idx, mean, std, rng.random(len(idx)) < 0.5)
            with precision.autocast():
                loss = F.cross_entropy(model(x.to(device)), y.to(device))
            precision.step(loss, opt)
            sched.step()
            total += finite_loss(loss, f"segmentation epoch {epoch}/{epochs}")
        losses.append(total / len(batches))
        log_epoch(tracker, "segmentation", epoch, epochs, {"train_loss": losses[-1]})
        checkpoint.save(
            {**capture(model=model, opt=opt, sched=sched, rng=rng, precision=precision), "losses": losses},
            f"epoch {epoch}/{epochs}",
        )
    return losses


@contextmanager
def cpu_bincount() -> Iterator[None]:
    """Let torchmetrics count with torch.bincount while it updates (on CPU tensors).

    With deterministic algorithms on, torchmetrics replaces bincount by an (N pixels x C^2) equality
    mesh: 8 x 128 x 128 pixels at 81 COCO classes is ~7 GB and got a job OOM-killed. CPU bincount
    is deterministic already, so switching the flag off for the update changes no result.
    """
    was, warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    set_deterministic(False)
    try:
        yield
    finally:
        set_deterministic(was, warn_only=warn)


def class_label_names(num_classes: int, class_names: list[str] | None) -> list[str]:
    """Names of labels 0..num_classes - 1: `background`, then `class_names` (`class_k` past its end)."""
    names = list(class_names or [])
    return ["background"] + [str(names[k - 1]) if k <= len(names) else f"class_{k}" for k in range(1, num_classes)]


@torch.no_grad()
def evaluate_segmenter(
    model: nn.Module,
    data: dict[str, np.ndarray],
    num_classes: int,
    batch_size: int,
    device: torch.device,
    mean: Tensor,
    std: Tensor,
    class_names: list[str] | None = None,
) -> dict:
    """mIoU over the classes present in the ground truth (background included), pixel accuracy, and
    `per_class`: {name: IoU} for those present classes (percent; label 0 is `background`, label k
    `class_names[k - 1]`)."""
    from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

    iou = MulticlassJaccardIndex(num_classes, average="none")
    acc = MulticlassAccuracy(num_classes, average="micro")
    present = torch.zeros(num_classes, dtype=torch.bool)
    model.to(device).eval()
    for idx in scene_batches(len(data["images"]), batch_size, None):
        x, y = _batch(data, idx, mean, std)
        pred = model(x.to(device)).argmax(1).cpu()
        with cpu_bincount():
            iou.update(pred, y)
            acc.update(pred, y)
        present |= torch.bincount(y.flatten(), minlength=num_classes)[:num_classes] > 0
    per_class = iou.compute()
    miou = float(per_class[present].mean()) if present.any() else 0.0
    names = class_label_names(num_classes, class_names)
    return {
        "miou": round(100.0 * miou, 4),
        "pixel_acc": round(100.0 * float(acc.compute()), 4),
        "per_class": {
            names[k]: round(100.0 * float(per_class[k]), 4) for k in torch.nonzero(present).flatten().tolist()
        },
    }


@torch.no_grad()
def draw_examples(
    path,
    model: nn.Module,
    data: dict[str, np.ndarray],
    class_names: list[str],
    device: torch.device,
    mean: Tensor,
    std: Tensor,
    n: int = EXAMPLES,
) -> None:
    """PNG of the first `n` val scenes, each as two panels: predicted mask over the image, and the
    ground-truth mask over it. Images are the stored uint8 pixels (before normalisation)."""
    from matplotlib.colors import ListedColormap

    n = min(n, len(data["images"]))
    idx = np.arange(n)
    model.to(device).eval()
    x, _ = _batch(data, idx, mean, std)
    pred = model(x.to(device)).argmax(1).cpu().numpy() if n else np.zeros((0, 1, 1), np.int64)
    num_labels = len(class_names) + 1
    colours = label_colours(len(class_names))
    cmap = ListedColormap(colours)
    fig, axes = example_figure(n, 2, "segmentation: prediction | ground truth (background clear)")
    for j, i in enumerate(idx):
        for ax, mask, title in ((axes[2 * j], pred[j], "pred"), (axes[2 * j + 1], data["masks"][i], "truth")):
            ax.imshow(data["images"][i], interpolation="nearest")
            ax.imshow(mask, cmap=cmap, vmin=-0.5, vmax=num_labels - 0.5, alpha=EXAMPLE_ALPHA, interpolation="nearest")
            ax.set_title(f"val scene {i}: {title}", fontsize=7)
            ax.axis("off")
    class_legend(fig, colours, class_names, np.unique(np.concatenate([pred.ravel(), data["masks"][idx].ravel()])))
    save_png(fig, path, dpi=100)


def run_segmentation(
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
    """Build, train and score a segmenter over background + `len(class_names)` labels; draw
    `examples` (a PNG path) when given; returns (metrics, timing)."""
    num_classes = len(class_names) + 1
    model = SegmentationNet(net, num_classes, cfg)
    mean = torch.tensor(image_mean).view(1, 3, 1, 1)
    std = torch.tensor(image_std).view(1, 3, 1, 1)
    t0 = time.perf_counter()
    train_segmenter(model, train, cfg, rng, tracker, device, mean, std, checkpoint, precision)
    t1 = time.perf_counter()
    metrics = evaluate_segmenter(model, val, num_classes, int(cfg["batch_size"]), device, mean, std, class_names)
    t2 = time.perf_counter()
    if examples is not None:
        draw_examples(examples, model, val, class_names, device, mean, std)
    return metrics, {"train_seconds": round(t1 - t0, 3), "eval_seconds": round(t2 - t1, 3)}


SEGMENTATION = TransferTask(run_segmentation, per_class_prefix="iou")  # MLflow: iou.<class>, the IoU per class
