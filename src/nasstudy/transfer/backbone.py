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
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, FeaturePyramidNetwork, LastLevelMaxPool

from nasstudy.spaces.mobile import build_net


def load_retrained(path: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild the retrained net from `model.pt` (weights_only) and load its weights."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    net = build_net(ckpt["space_cfg"], [tuple(o) for o in ckpt["ops"]], int(ckpt["num_classes"]))
    net.load_state_dict(ckpt["state_dict"])
    return net, ckpt


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

    Stages with stride below `min_stride` are left out of the pyramid (too fine to pay for at 96 px);
    `out_channels` and `strides` describe the levels returned, extra block included.
    """

    def __init__(
        self,
        net: nn.Module,
        fpn_channels: int = 32,
        min_stride: int = 4,
        extra: ExtraFPNBlock | None = None,
    ) -> None:
        super().__init__()
        strides = stage_strides(net)
        keep = [i for i, s in enumerate(strides) if s >= min_stride] or [len(strides) - 1]
        self.net = net
        self.keep = keep
        self.fpn = FeaturePyramidNetwork(
            [int(net.feature_channels[i]) for i in keep], fpn_channels, extra_blocks=extra
        )
        self.out_channels = fpn_channels
        self.strides = [strides[i] for i in keep]
        if isinstance(extra, LastLevelMaxPool):
            self.strides.append(self.strides[-1] * 2)
        elif extra is not None:  # LastLevelP6P7
            self.strides += [self.strides[-1] * 2, self.strides[-1] * 4]

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        feats = self.net.features(x)
        return self.fpn(OrderedDict((str(i), feats[i]) for i in self.keep))


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
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    return opt, sched
