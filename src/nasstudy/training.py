"""Training helpers shared by the supernet, evolution, search and retrain stages.

Datasets are small, so a split is loaded once into normalised float tensors and batches are cut by
indexing; augmentation runs on whole batches. All randomness comes from a torch.Generator seeded from
the study seed, so a run on CPU with a fixed thread count is repeatable bit for bit.
"""

from __future__ import annotations

import contextlib
import io
import math
import pickle
import sys
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from tqdm import tqdm

from nasstudy.utils import atomic_write_bytes, corrupt, derive_seed

# Fixed, data-independent normalisation: every split and every task sees the same inputs.
MEAN = 0.5
STD = 0.25


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; 'cuda' without a GPU is an error rather than a silent CPU run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {name!r}: expected auto, cpu or cuda")
    return torch.device(name)


class MixedPrecision:
    """float16 autocast and a GradScaler when params `amp` is on and the job runs on CUDA; a plain
    backward/step otherwise (CPU runs stay bit-exact). Scaler state goes into checkpoints."""

    def __init__(self, device: torch.device | str, enabled: bool = False) -> None:
        self.enabled = bool(enabled) and torch.device(device).type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.enabled)

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast("cuda", dtype=torch.float16) if self.enabled else contextlib.nullcontext()

    def step(self, loss: Tensor, optimizer: torch.optim.Optimizer, clip: tuple | None = None) -> None:
        """zero_grad, backward and step, through the scaler when enabled; `clip` = (parameters, max
        norm) clips the true (unscaled) gradients first."""
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if clip is not None:
            self.scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(*clip)
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.scaler.load_state_dict(state)


class DivergedError(RuntimeError):
    """A training loss became nan or inf: every later weight and score would be meaningless."""


def finite_loss(loss: Tensor | float, where: str) -> float:
    """`loss` as a float; nan/inf stops the job with one line naming `where` (the loop and its epoch)."""
    value = float(loss.detach()) if isinstance(loss, Tensor) else float(loss)
    if not math.isfinite(value):
        raise DivergedError(
            f"{where}: training loss became {value}; the weights diverged, so the job stops "
            f"(lower the learning rate, or check the data for nan/inf values)"
        )
    return value


def make_generator(seed: int, *names: object) -> torch.Generator:
    """A CPU torch.Generator seeded from the study seed and names (batch order, augmentation)."""
    g = torch.Generator()
    g.manual_seed(derive_seed(seed, *names))
    return g


@dataclass
class ClsData:
    """A classification split in memory: images (N,3,H,W) float normalised, labels (N,) int64."""

    images: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return len(self.labels)


def load_cls(path: str | Path, device: torch.device | str = "cpu", channels_last: bool = False) -> ClsData:
    """Load an npz with `images` (N,H,W,3 uint8) and `labels` into normalised tensors on `device`."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"classification split {path} does not exist")
    try:
        with np.load(path) as d:
            images = torch.from_numpy(np.ascontiguousarray(d["images"]))
            labels = torch.from_numpy(d["labels"].astype(np.int64))
    except (zipfile.BadZipFile, EOFError, ValueError, KeyError, OSError) as e:
        raise corrupt(path, "a readable classification npz (images, labels)", e) from None
    x = images.permute(0, 3, 1, 2).float().div_(255.0).sub_(MEAN).div_(STD)
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()
    return ClsData(x.to(device), labels.to(device))


def augment_batch(x: Tensor, generator: torch.Generator, pad: int = 4) -> Tensor:
    """Random crop with zero padding and horizontal flip, for a whole batch at once."""
    n, _, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = torch.arange(w, device=x.device)[None, :]
    cols = torch.where(flip[:, None], w - 1 - cols, cols)
    cols = (ox[:, None] + cols)[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    out = xp[batch, chans, rows, cols]
    return out.contiguous(memory_format=torch.channels_last) if _is_cl(x) else out.contiguous()


def _is_cl(x: Tensor) -> bool:
    return x.dim() == 4 and x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last)


def iterate_batches(
    data: ClsData,
    batch_size: int,
    generator: torch.Generator | None = None,
    augment: bool = False,
    drop_last: bool = False,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Shuffled batches when a generator is given (training), in order otherwise (evaluation)."""
    n = len(data)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    order = order.to(data.labels.device)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for i in range(0, stop, batch_size):
        idx = order[i : i + batch_size]
        x = data.images[idx]
        if augment:
            if generator is None:
                raise ValueError("augmentation needs a generator")
            x = augment_batch(x, generator)
        yield x, data.labels[idx]


class BatchCycle:
    """Endless shuffled batches of a split (the architecture steps' held-out data). Resumable: its
    state is the current permutation and position, so a checkpoint continues the same sequence."""

    def __init__(self, data: ClsData, batch_size: int, generator: torch.Generator) -> None:
        self.data, self.generator = data, generator
        self.batch_size = max(1, min(batch_size, len(data)))
        self.stop = len(data) - len(data) % self.batch_size
        self.order: Tensor | None = None
        self.pos = 0

    def __iter__(self) -> BatchCycle:
        return self

    def __next__(self) -> tuple[Tensor, Tensor]:
        if self.order is None or self.pos >= self.stop:  # a new permutation once the last one is used up
            self.order = torch.randperm(len(self.data), generator=self.generator).to(self.data.labels.device)
            self.pos = 0
        idx = self.order[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return self.data.images[idx], self.data.labels[idx]

    def state_dict(self) -> dict:
        return {"order": None if self.order is None else self.order.cpu(), "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        order = state["order"]
        self.order = None if order is None else order.to(self.data.labels.device)
        self.pos = int(state["pos"])


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: ClsData,
    batch_size: int,
    generator: torch.Generator,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    pick_ops: Callable[[], Sequence[Sequence[str]]] | None = None,
    augment: bool = False,
    desc: str = "train",
    precision: MixedPrecision | None = None,
) -> tuple[float, float]:
    """One epoch; returns (mean loss, accuracy %). With `pick_ops`, `model` is a supernet run on a
    fresh arch every step (the scheduler, if any, steps per batch); `precision` adds AMP on CUDA."""
    precision = precision or MixedPrecision("cpu")
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    batches = iterate_batches(data, batch_size, generator, augment=augment, drop_last=True)
    steps = len(data) // batch_size if len(data) >= batch_size else 1
    for x, y in tqdm(batches, total=steps, desc=desc, file=sys.stderr, mininterval=5, leave=False):
        with precision.autocast():
            out = model(x, pick_ops()) if pick_ops is not None else model(x)
            loss = F.cross_entropy(out, y)
        precision.step(loss, optimizer)
        if scheduler is not None:
            scheduler.step()
        total_loss += finite_loss(loss, desc) * len(y)
        correct += int((out.argmax(1) == y).sum())
        seen += len(y)
    return total_loss / max(seen, 1), 100.0 * correct / max(seen, 1)


def cosine_scheduler(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Cosine decay from the base LR to 0 over `total_steps` optimizer steps."""
    total = max(1, int(total_steps))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, total) / total))
    )


def sgd(model: nn.Module, lr: float, momentum: float, weight_decay: float) -> torch.optim.SGD:
    """SGD with Nesterov momentum and no weight decay on BN and biases (the usual recipe for small nets)."""
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.dim() <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)


def sgd_cosine(
    model: nn.Module, cfg: dict, total_steps: int
) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.LambdaLR]:
    """`sgd` with a training section's lr, momentum and weight_decay, and its cosine schedule."""
    optimizer = sgd(model, float(cfg["lr"]), float(cfg["momentum"]), float(cfg["weight_decay"]))
    return optimizer, cosine_scheduler(optimizer, total_steps)


@torch.no_grad()
def evaluate(forward_fn: Callable[[Tensor], Tensor], data: ClsData, batch_size: int = 128) -> tuple[float, float]:
    """(accuracy %, mean cross-entropy) over a split; an nn.Module is put in eval mode first."""
    if isinstance(forward_fn, nn.Module):
        forward_fn.eval()
    total_loss, correct = 0.0, 0
    for x, y in iterate_batches(data, batch_size):
        out = forward_fn(x)
        total_loss += float(F.cross_entropy(out, y, reduction="sum"))
        correct += int((out.argmax(1) == y).sum())
    n = max(len(data), 1)
    return 100.0 * correct / n, total_loss / n


def recal_subset(data: ClsData, count: int) -> ClsData:
    """`count` images spread evenly over the split: the same for every arch, balanced if sorted by class."""
    n = len(data)
    count = min(count, n)
    idx = (torch.arange(count) * n // max(count, 1)).to(data.labels.device)
    return ClsData(data.images[idx], data.labels[idx])


@torch.no_grad()
def recalibrate_bn(
    supernet: nn.Module, ops: Sequence[Sequence[str]], train_data: ClsData, batches: int, batch_size: int = 128
) -> None:
    """Reset BN running stats and re-estimate them for `ops` (cumulative average), then eval mode.

    Shared weights see many archs' statistics during training; an arch's own statistics make its
    inherited-weight accuracy meaningful.
    """
    bns = [m for m in supernet.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    supernet.train()
    subset = recal_subset(train_data, batches * batch_size)
    for x, _ in iterate_batches(subset, batch_size):
        supernet(x, ops)
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    supernet.eval()


def score_arch(
    supernet: nn.Module,
    ops: Sequence[Sequence[str]],
    train_data: ClsData,
    val_data: ClsData,
    recal_batches: int,
    batch_size: int = 128,
) -> tuple[float, float]:
    """(val accuracy %, val loss) of an arch with inherited weights after BN recalibration."""
    recalibrate_bn(supernet, ops, train_data, recal_batches, batch_size)
    if hasattr(supernet, "subnet"):
        # A standalone copy with BN folded into the convs scores ~30% faster on CPU, same result.
        net = fuse_bn(supernet.subnet(ops).eval())
        if _is_cl(val_data.images):
            net = net.to(memory_format=torch.channels_last)
        return evaluate(net, val_data, batch_size)
    return evaluate(lambda x: supernet(x, ops), val_data, batch_size)


def fuse_bn(net: nn.Module) -> nn.Module:
    """Fold every eval-mode BN that directly follows a conv in an nn.Sequential into that conv."""
    for m in net.modules():
        if isinstance(m, nn.Sequential):
            for i in range(len(m) - 1):
                if isinstance(m[i], nn.Conv2d) and isinstance(m[i + 1], nn.BatchNorm2d):
                    m[i] = fuse_conv_bn_eval(m[i], m[i + 1])
                    m[i + 1] = nn.Identity()
    return net


def save_model_file(obj: dict, path: str | Path) -> None:
    """Write a model file (a supernet.pt, a model.pt): torch.save to memory, then an atomic write, so a
    crash never leaves half a file. (A job's resume state is nasstudy.checkpoint's, not this.)"""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_model_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a model file of plain types and tensors only (`weights_only=True`); a truncated or foreign
    file is a CorruptFile naming it."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, ValueError, OSError, pickle.UnpicklingError) as e:  # OSError: a cut zip
        raise corrupt(path, "a readable model file", e) from None
