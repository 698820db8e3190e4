"""The searched architecture as a dense-prediction backbone: retrained weights + a torchvision FPN.

Transfer measures how well the architecture found by search carries over to detection and
segmentation, so the backbone is the retrained classification net itself (rebuilt from `model.pt`,
weights loaded), with its multi-scale `features` fed to `torchvision.ops.FeaturePyramidNetwork`.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from nasstudy.spaces.mobile import build_net

EXAMPLES = 6  # val scenes drawn in examples.png: the first ones, so every run draws the same
EXAMPLE_COLUMNS = 3  # scenes per row of examples.png


def load_retrained(path: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild the retrained net from `model.pt` (weights_only) and load its weights."""
    from nasstudy.training import load_model_file

    saved = load_model_file(path)
    net = build_net(saved["space_cfg"], [tuple(o) for o in saved["ops"]], int(saved["num_classes"]))
    net.load_state_dict(saved["state_dict"])
    return net, saved


def stage_strides(net: nn.Module, probe: int = 64) -> list[int]:
    """Stride of each stage of `net.features`, found by one probe forward (no space arithmetic)."""
    was_training = net.training
    net.eval()
    with torch.no_grad():
        feats = net.features(torch.zeros(1, 3, probe, probe))
    net.train(was_training)
    return [probe // f.shape[-1] for f in feats]


class FPNBackbone(nn.Module):
    """Selected stages of `net.features` -> FPN maps (OrderedDict), the input torchvision heads take.

    Stages with stride below `min_stride` are left out of the pyramid (too fine to pay for at 96 px).
    With `freeze_early`, the stem and those stages are frozen (weights and BN statistics), as
    torchvision freezes a ResNet's first layers for detection: they hold generic low-level filters
    and, at full resolution, most of the backward cost. `out_channels` and `strides` describe the
    levels returned, extra block included.
    """

    def __init__(
        self,
        net: nn.Module,
        fpn_channels: int = 32,
        min_stride: int = 4,
        extra: LastLevelMaxPool | None = None,
        freeze_early: bool = True,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        strides = stage_strides(net)
        keep = [i for i, s in enumerate(strides) if s >= min_stride] or [len(strides) - 1]
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        self.channels_last = channels_last
        self.keep = keep
        self.frozen = early_modules(net, keep[0]) if freeze_early else []
        for m in self.frozen:
            m.requires_grad_(False)
        self.fpn = FeaturePyramidNetwork([int(net.feature_channels[i]) for i in keep], fpn_channels, extra_blocks=extra)
        self.out_channels = fpn_channels
        self.strides = [strides[i] for i in keep]
        if extra is not None:  # one more level at twice the coarsest stride
            self.strides.append(self.strides[-1] * 2)

    def train(self, mode: bool = True) -> FPNBackbone:
        """Frozen modules stay in eval mode: their BN statistics are the retrained ones."""
        super().train(mode)
        for m in self.frozen:
            m.eval()
        return self

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        if self.channels_last:  # depthwise convs run about twice as fast in NHWC on CPU
            x = x.contiguous(memory_format=torch.channels_last)
        feats = self.net.features(x)
        return self.fpn(OrderedDict((str(i), feats[i]) for i in self.keep))


def early_modules(net: nn.Module, first_kept: int) -> list[nn.Module]:
    """The stem and the positions of the stages before `first_kept` (mobile nets: `stem`,
    `positions`, `stage_ends`); an empty list for a net without that layout (nothing frozen)."""
    if not all(hasattr(net, a) for a in ("stem", "positions", "stage_ends")):
        return []
    last = net.stage_ends[first_kept - 1] if first_kept > 0 else -1
    return [net.stem, *list(net.positions)[: last + 1]]


def backbone_kw(cfg: dict) -> dict:
    """FPNBackbone's switches from a task's params section."""
    return {"freeze_early": bool(cfg["freeze_early"]), "channels_last": bool(cfg["channels_last"])}


def normalise(images: np.ndarray) -> Tensor:
    """uint8 NHWC -> float NCHW in [0, 1]; the mean/std step is the model's (as in retraining)."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


def scene_batches(n: int, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Index batches: shuffled by `rng` when given (training), in order otherwise (evaluation).

    A trailing batch of one image is dropped in training: BatchNorm in train mode needs two samples.
    """
    order = rng.permutation(n) if rng is not None else np.arange(n)
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if rng is not None and len(batches) > 1 and len(batches[-1]) < 2:
        batches.pop()
    return batches


def cosine_sgd(
    model: nn.Module, lr: float, steps: int, momentum: float = 0.9, weight_decay: float = 1e-4
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """SGD with momentum and a per-step cosine schedule, the same recipe for both tasks."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(trainable, lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    return opt, sched


# ----------------------------------------------------------------------------- examples.png


def label_colours(num_classes: int) -> np.ndarray:
    """RGBA per label 0..C: 0 (background) transparent, objects from tab10 (up to 10 classes) or
    tab20 (cycling past 20)."""
    from matplotlib import colormaps

    k = 10 if num_classes <= 10 else 20
    tab = colormaps[f"tab{k}"](np.arange(k))
    return np.vstack([[0.0, 0.0, 0.0, 0.0], tab[np.arange(num_classes) % k]])


def class_legend(fig, colours: np.ndarray, names: list[str], labels) -> None:
    """A figure legend: colour and name of each label in `labels` (label k is names[k - 1])."""
    from matplotlib.patches import Patch

    shown = sorted({int(k) for k in labels if 0 < int(k) <= len(names)})
    if shown:
        handles = [Patch(color=colours[k], label=names[k - 1]) for k in shown]
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 8), fontsize=7, frameon=False)


def example_figure(n: int, panels: int, title: str):
    """A matplotlib Figure (no pyplot state) for `n` scenes of `panels` axes each, EXAMPLE_COLUMNS
    scenes per row; returns it with the n * panels axes in scene order (extra cells hidden)."""
    from matplotlib.figure import Figure

    cols = EXAMPLE_COLUMNS * panels
    rows = max(1, -(-n // EXAMPLE_COLUMNS))
    fig = Figure(figsize=(1.9 * cols, 2.0 * rows + 0.5), layout="constrained")
    axes = list(fig.subplots(rows, cols, squeeze=False).flat)
    for ax in axes[n * panels :]:
        ax.axis("off")
    if n == 0:
        axes[0].text(0.5, 0.5, "no val scenes", ha="center", va="center", transform=axes[0].transAxes)
    fig.suptitle(title, fontsize=9)
    return fig, axes[: n * panels]
