"""RelativeNAS's joint learning on shared weights (Tan et al., TNNLS 2021): the paper's weight-set
training and merge, beside the supernet code rather than in the method, so that the method stays
the pure slow-fast algorithm and imports no space and no training code.

For a pair of archs, each member trains a copy of the supernet along its own path, both copies are
validated, and the merged weights go back into the supernet; `stages/search.py::search_jointly`
composes this with `methods.relativenas.RelativeNAS` pair after pair. The merge knows the mobile
supernet's state keys (`positions.<i>.branches.<op>`, `positions.<i>.proj`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from nasstudy.methods.base import Arch, as_arch
from nasstudy.methods.relativenas import fast_index
from nasstudy.training import ClsData, evaluate, finite_loss, iterate_batches, score_arch

if TYPE_CHECKING:
    from nasstudy.spaces.mobile import MobileSpace


def cosine_lr(epoch: int, epochs: float, lr: float, lr_min: float) -> float:
    """The joint learning's lr in search epoch `epoch` (0-based) of `epochs`: the paper's cosine
    annealing from `lr` to `lr_min` over the search, one value per epoch (PyTorch's CosineAnnealingLR
    with T_max = epochs, stepped after each epoch, as in the authors' train_search.py)."""
    return lr_min + (lr - lr_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2


def train_on_path(
    supernet: nn.Module,
    ops: Sequence[Sequence[str]],
    train_data: ClsData,
    make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
    generator: torch.Generator,
    steps: int | None = None,
    batch_size: int = 256,
    grad_clip: float | None = 5.0,
    augment: bool = False,
) -> tuple[nn.Module, float]:
    """A copy of `supernet` trained along the single path `ops` for `steps` batches (None: one
    epoch), and its mean train loss. The supernet itself is left untouched."""
    if len(train_data) == 0:
        raise ValueError("train_on_path needs a non-empty train split")
    net = copy.deepcopy(supernet)
    net.train()
    optimizer = make_optimizer(net)
    per_epoch = max(1, len(train_data) // batch_size)
    steps = per_epoch if steps is None else int(steps)
    total, done = 0.0, 0
    while done < steps:
        for x, y in iterate_batches(train_data, batch_size, generator, augment=augment, drop_last=True):
            loss = F.cross_entropy(net(x, ops), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
            optimizer.step()
            total += finite_loss(loss, f"relativenas path training step {done + 1}/{steps}")
            done += 1
            if done == steps:
                break
    return net, total / max(done, 1)


def _owner(key: str) -> tuple[int, str] | None:
    """(position, op) a supernet state key belongs to; `proj` is the position's empty-subset op;
    None for the parts every arch uses (stem, head, classifier)."""
    parts = key.split(".")
    if parts[0] != "positions":
        return None
    if parts[2] == "branches":
        return int(parts[1]), parts[3]
    if parts[2] == "proj":
        return int(parts[1]), ""
    return None


def _uses(ops: Sequence[Sequence[str]], owner: tuple[int, str]) -> bool:
    i, op = owner
    return (not ops[i]) if op == "" else op in ops[i]


def merge_pair_weights(
    supernet: nn.Module,
    fast_net: nn.Module,
    fast_ops: Sequence[Sequence[str]],
    slow_net: nn.Module,
    slow_ops: Sequence[Sequence[str]],
) -> None:
    """Write the pair's weights into `supernet`: an op's weights come from the model that uses it,
    the fast learner's when both do; shared parts and ops neither uses come from the fast learner
    (an op neither trained is unchanged in both copies, as in the authors' code)."""
    fast, slow = fast_net.state_dict(), slow_net.state_dict()
    merged = {}
    for key in supernet.state_dict():
        owner = _owner(key)
        take_slow = owner is not None and _uses(slow_ops, owner) and not _uses(fast_ops, owner)
        merged[key] = (slow if take_slow else fast)[key]
    supernet.load_state_dict(merged)


@dataclass
class PairResult:
    """Metrics of the two members in the order given, and which of them (0 or 1) was fast."""

    metrics: tuple[dict, dict]
    fast: int


def train_pair_on_supernet(
    supernet: nn.Module,
    space: MobileSpace,
    arch_a: Arch,
    arch_b: Arch,
    train_data: ClsData,
    val_data: ClsData,
    make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
    generator: torch.Generator,
    steps: int | None = None,
    batch_size: int = 256,
    grad_clip: float | None = 5.0,
    augment: bool = False,
    recal_batches: int = 0,
    val_batch_size: int = 256,
    compare: str = "acc",
) -> PairResult:
    """One pair of the paper's joint learning: each member trains a copy of the shared weights on
    its own path (from the same start), both copies are validated, and the merged weights go back
    into `supernet` in place. `space` gives `ops`, `flops` and `params` of an arch (MobileSpace).

    Validation uses the BN statistics training left (the paper) unless `recal_batches` > 0.
    The returned metrics are what `RelativeNAS.tell` takes, so it picks the same fast learner.

    Pass the method's `compare`, so the merge keeps the fast learner's weights by the same rule.
    `stages/search.py::search_jointly` calls it pair after pair (each pair starts from the last
    merge), with an lr from `cosine_lr`; these archs never go through SupernetEvaluator, whose cache
    would return scores of older weights.
    """
    ops = [space.ops(as_arch(arch_a)), space.ops(as_arch(arch_b))]
    nets, metrics = [], []
    for arch, path in zip((arch_a, arch_b), ops):
        net, train_loss = train_on_path(
            supernet, path, train_data, make_optimizer, generator, steps, batch_size, grad_clip, augment
        )
        if recal_batches > 0:
            acc, loss = score_arch(net, path, train_data, val_data, recal_batches, val_batch_size)
        else:
            net.eval()
            acc, loss = evaluate(lambda x, net=net, path=path: net(x, path), val_data, val_batch_size)
        nets.append(net)
        metrics.append(
            {
                "acc": float(acc),
                "loss": float(loss),
                "train_loss": float(train_loss),
                "flops": space.flops(as_arch(arch)),
                "params": space.params(as_arch(arch)),
            }
        )
    f = fast_index(metrics[0], metrics[1], compare)
    merge_pair_weights(supernet, nets[f], ops[f], nets[1 - f], ops[1 - f])
    return PairResult((metrics[0], metrics[1]), f)
