"""NSE — Neural Search-space Evolution (Ci et al., ICCV 2021), one round per call (docs/design.md#nse):
the torch half, the supernet, its α training and the drop. NSE's numpy half (config, band sampling,
the Pareto front, the state update) is `nse_front.py`; its table variant (nb201 with a lookup table
in place of a supernet, the bench_space study) is in `table_evolution.py`.

A round trains a fresh multi-branch supernet on the active candidates of every position, learns one
logit α per (position, candidate) on held-out train data, drops candidates whose α falls below a
threshold (unless an arch on last round's front used them), then scores archs sampled near the FLOPs
target with shared weights and keeps the ops that some Pareto-front arch uses; the queue tops every
position up to K again. The paper runs (pool − 1) // (K − 1) rounds; the pipeline runs one round per
Snakemake job and `evolution.generations` of them.

Our reading of the authors' code (orashi/NSE_NAS, `utils/supernet_utils.py`, `main.py`), followed here:

- Weight steps: every active branch on with probability `branch_prob`, independently (their
  `balance: True` configs; their sampler rejects an empty subset at shape-changing positions, ours
  allows it since every subset is valid here). SGD with cosine decay.
- Architecture step, every few weight steps, on a held-out batch: per position, draw two *different*
  branch subsets A, B from the product-Bernoulli law with p = sigmoid(α) (clamped to
  [5e-4, 1 − 5e-4]); their code enumerates all subsets and draws two without replacement, so do we.
  With P_S = Π p_j^[j∈S] (1 − p_j)^[j∉S] and ŵ_S = P_S / (P_A + P_B), the position's output is
  `y_A · (ŵ_A + 1 − sg(ŵ_A)) + y_B · (ŵ_B − sg(ŵ_B))`, y_B computed without grad: the forward value
  is exactly arch A, and α receives the gradient of the loss along both sampled outputs. Only α
  steps (Adam, β1 = 0, β2 = 0.999 as in their configs). Their FLOPs term uses the same two-sample
  weights; ours is the exact expectation under independent Bernoulli gates (per-branch MACs from the
  space's analytic count, plus the skip/projection cost when no branch is on), differentiable in
  sigmoid(α): loss = CE + λ · (E[FLOPs] − target)².
- Drop: their `clean_space` runs before every iteration, i.e. right after each α step; we check
  after each architecture step. Candidates with α < threshold leave the round unless protected.
  Their code never empties a reduction cell; every subset is valid here, so a position may lose
  all its candidates (it then skips, or projects where the shape changes).
- Round end: their `batch_sampler` draws unique archs with the α probabilities until enough fall
  within ±drift of the target, plus some from a band just below; their previous front archs are
  scored again; the Pareto front is taken over all of them, but lower-band archs are then removed
  from it (`pareto_front[sample_num:sample_num + extra] = False`): they can dominate but never
  survive. We do the same, with a draw cap and a nearest-to-band fallback. Every arch on last
  round's front (`state["front"]`, their `prev_bests`) is scored again with this round's weights
  and joins the front computation (band `prev_front`, eligible whatever its FLOPs, as theirs); one
  drawn again in the near band is scored once. If lower-band archs dominate every other arch, the
  best-accuracy eligible arch is the front (a guard their code lacks).
- Protection: as their `prev_best`, the union of the ops of all archs on last round's front
  (= the ops that survived it), stored as `positions[i]["protected"]`, never drops on α.
- Dropped ops leave the pool (their `update_space` pops the queue and never re-queues).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from nasstudy.checkpoint import NO_CHECKPOINT, Checkpoint, capture, restore
from nasstudy.evolution import RoundFiles, SpaceEvolution, rounded
from nasstudy.evolution.nse_front import (
    OP_STATS_COLUMNS,
    FrontRow,
    NSEConfig,
    pareto_mask,
    prev_front_bits,
    sample_band_archs,
    update_state,
)
from nasstudy.spaces.mobile import MobileSpace, Supernet, position_shapes
from nasstudy.spaces.mobile_blocks import global_pool, position_cost
from nasstudy.tracking import Tracker, log_epoch
from nasstudy.training import (
    BatchCycle,
    ClsData,
    MixedPrecision,
    finite_loss,
    iterate_batches,
    recal_subset,
    score_arch,
    sgd_cosine,
)

P_MIN = 5e-4  # their clamp: p = sigmoid(α) · 0.999 + 5e-4

__all__ = ["NSE", "FrontRow", "NSEConfig", "NSEResult", "drop_candidates", "nse_round", "round_files", "split_train"]


@dataclass
class NSEResult:
    """What one round produced: the next state and everything measured on the way."""

    state: dict
    front: list[FrontRow]
    op_stats: list[dict]
    epochs: list[dict]
    summary: dict
    supernet: Supernet
    alpha: Tensor
    alive: np.ndarray


class CostModel:
    """Per-branch MACs of the active ops (padded to a (positions, K) grid) for expected and sampled FLOPs."""

    def __init__(self, space_cfg: dict, space: MobileSpace, width: int) -> None:
        shapes = position_shapes(space_cfg)
        self.cost = np.zeros((len(shapes), width), dtype=np.float64)
        self.empty = np.zeros(len(shapes), dtype=np.float64)
        for i, (ops, shape) in enumerate(zip(space.active, shapes)):
            self.empty[i] = position_cost([], *shape)[0]
            for j, op in enumerate(ops):
                self.cost[i, j] = position_cost([op], *shape)[0]
        self.fixed = float(space.flops((0,) * len(space.decision_sizes))) - float(self.empty.sum())

    def flops(self, bits: np.ndarray) -> np.ndarray:
        """MACs of archs given as (..., positions, K) 0/1 arrays (what `space.flops` counts)."""
        chosen = (bits * self.cost).sum(-1)
        none = ~bits.astype(bool).any(-1)
        return self.fixed + (chosen + none * self.empty).sum(-1)

    def expected(self, p: Tensor) -> Tensor:
        """E[MACs] when branch (i, j) is on with probability p[i, j] (0 for dropped), independently."""
        cost = torch.as_tensor(self.cost, dtype=p.dtype, device=p.device)
        empty = torch.as_tensor(self.empty, dtype=p.dtype, device=p.device)
        return self.fixed + (p * cost).sum() + (torch.prod(1 - p, dim=1) * empty).sum()


def _subsets(n: int) -> np.ndarray:
    """All 2^n subsets of n branches as a (2^n, n) bool array."""
    return ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(bool)


def _two_subsets(p: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two different subsets drawn without replacement from the product-Bernoulli law of `p`."""
    subs = _subsets(len(p))
    probs = np.where(subs, p, 1 - p).prod(1)
    a = int(rng.choice(len(subs), p=probs / probs.sum()))
    probs[a] = 0.0
    b = int(rng.choice(len(subs), p=probs / probs.sum()))
    return subs[a], subs[b]


def _names(active: list[str], idx: np.ndarray, on: np.ndarray) -> tuple[str, ...]:
    return tuple(active[j] for j, o in zip(idx, on) if o)


def _clamped(alpha: Tensor) -> Tensor:
    return torch.sigmoid(alpha) * (1 - 2 * P_MIN) + P_MIN


def _arch_loss(
    net: Supernet,
    x: Tensor,
    y: Tensor,
    alpha: Tensor,
    alive: np.ndarray,
    active: list[list[str]],
    costs: CostModel,
    cfg: NSEConfig,
    rng: np.random.Generator,
) -> tuple[Tensor, float]:
    """CE of the straight-through mix of two sampled subsets per position, plus the FLOPs term."""
    p = _clamped(alpha)
    p_np = p.detach().cpu().double().numpy()
    h = net.stem(x)
    for i, pos in enumerate(net.positions):
        idx = np.flatnonzero(alive[i])
        if len(idx) == 0:
            h = pos(h, ())
            continue
        on_a, on_b = _two_subsets(p_np[i, idx], rng)
        pi = p[i, torch.as_tensor(idx, device=p.device)]
        prob_a = torch.where(torch.as_tensor(on_a, device=p.device), pi, 1 - pi).prod()
        prob_b = torch.where(torch.as_tensor(on_b, device=p.device), pi, 1 - pi).prod()
        w_a, w_b = prob_a / (prob_a + prob_b), prob_b / (prob_a + prob_b)
        y_a = pos(h, _names(active[i], idx, on_a))
        with torch.no_grad():
            y_b = pos(h, _names(active[i], idx, on_b))
        h = y_a * (w_a + 1 - w_a.detach()) + y_b * (w_b - w_b.detach())
    logits = net.classifier(global_pool(net.head(h)))
    ce = F.cross_entropy(logits, y)
    mask = torch.as_tensor(alive, device=alpha.device)
    expected = costs.expected(torch.sigmoid(alpha) * mask)
    return ce + cfg.flops_lambda * (expected - cfg.flops_target) ** 2, float(ce.detach())


def split_train(train: ClsData, holdout_frac: float, rng: np.random.Generator) -> tuple[ClsData, ClsData]:
    """(weight part, held-out part) of the train split, a seeded random partition."""
    n = len(train)
    n_hold = min(n - 1, max(1, int(round(holdout_frac * n))))
    perm = torch.as_tensor(rng.permutation(n), device=train.labels.device)
    hold, weight = perm[:n_hold], perm[n_hold:]
    return (ClsData(train.images[weight], train.labels[weight]), ClsData(train.images[hold], train.labels[hold]))


def weight_training(
    net: Supernet,
    train: ClsData,
    holdout_frac: float,
    train_cfg: dict,
    epochs: int,
    rng: np.random.Generator,
    batch_gen: torch.Generator,
    channels_last: bool = False,
) -> tuple[Supernet, ClsData, BatchCycle, int, torch.optim.Optimizer, object]:
    """What NSE and AutoSpace share for their weight steps: the net in its memory format, the
    weight part of train, an endless batch cycle over the held-out part (for α steps), steps per
    epoch, and SGD with a cosine schedule over all epochs."""
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    batch_size = int(train_cfg["batch_size"])
    weight_data, hold_data = split_train(train, holdout_frac, rng)
    steps_per_epoch = max(1, len(weight_data) // batch_size)
    optimizer, scheduler = sgd_cosine(net, train_cfg, epochs * steps_per_epoch)
    return net, weight_data, BatchCycle(hold_data, batch_size, batch_gen), steps_per_epoch, optimizer, scheduler


def resume_round(checkpoint: Checkpoint, tracker: Tracker, parts: dict) -> dict:
    """Restore `parts` from the last finished epoch's checkpoint and log its epochs again; returns
    the saved extras (empty when starting afresh)."""
    if (saved := checkpoint.load()) is None:
        return {"epochs": [], "step": 0}
    restore(saved, **parts)
    for e, row in enumerate(saved["epochs"]):
        tracker.log_metrics(row, step=e)
    return saved


def nse_round(
    state: dict,
    space_cfg: dict,
    train: ClsData,
    val: ClsData,
    cfg: NSEConfig,
    train_cfg: dict,
    rng: np.random.Generator,
    batch_gen: torch.Generator,
    tracker: Tracker,
    device: torch.device | str = "cpu",
    channels_last: bool = False,
    desc: str = "nse",
    checkpoint: Checkpoint = NO_CHECKPOINT,
    precision: MixedPrecision | None = None,
) -> NSEResult:
    """One NSE round on `state`; `train_cfg` holds batch_size, lr, momentum, weight_decay, bn_recal_batches.

    The returned state keeps K active ops per position (fewer only when the queue runs dry), the
    surviving ops first, in their old order, then ops from the queue front.
    """
    space = MobileSpace(space_cfg, state)
    active = space.active
    protected = [set(p.get("protected", [])) for p in state["positions"]]
    width = max(1, max(len(a) for a in active))
    alive = np.zeros((len(active), width), dtype=bool)
    for i, ops in enumerate(active):
        alive[i, : len(ops)] = True
    costs = CostModel(space_cfg, space, width)

    alpha = torch.full((len(active), width), float(cfg.alpha_init), device=device, requires_grad=True)
    net, weight_data, held, steps_per_epoch, optimizer, scheduler = weight_training(
        Supernet(space_cfg, active).to(device), train, cfg.holdout_frac, train_cfg, cfg.epochs, rng, batch_gen,
        channels_last,
    )  # fmt: skip
    batch_size = int(train_cfg["batch_size"])
    arch_opt = torch.optim.Adam([alpha], lr=cfg.alpha_lr, betas=(0.0, 0.999))

    precision = precision or MixedPrecision(device)  # AMP for the weight steps; α steps stay float32
    parts = dict(net=net, optimizer=optimizer, scheduler=scheduler, alpha=alpha, arch_opt=arch_opt,
                 batch_gen=batch_gen, rng=rng, held=held, precision=precision)  # fmt: skip
    saved = resume_round(checkpoint, tracker, parts)  # continue after the last finished epoch
    epochs, step = saved["epochs"], saved["step"]
    drops: dict[tuple[int, int], float] = saved.get("drops", {})
    if "alive" in saved:
        alive[:] = saved["alive"].numpy()
    for epoch in range(len(epochs), cfg.epochs):
        net.train()
        loss_sum, correct, seen, arch_ce = 0.0, 0, 0, []
        batches = iterate_batches(weight_data, batch_size, batch_gen, drop_last=True)
        label = f"{desc} epoch {epoch + 1}/{cfg.epochs}"
        for x, y in tqdm(batches, total=steps_per_epoch, desc=label, file=sys.stderr, mininterval=5, leave=False):
            gate = (rng.random(alive.shape) < cfg.branch_prob) & alive
            ops = [_names(a, np.arange(len(a)), gate[i, : len(a)]) for i, a in enumerate(active)]
            with precision.autocast():
                out = net(x, ops)
                loss = F.cross_entropy(out, y)
            precision.step(loss, optimizer)
            scheduler.step()
            loss_sum += finite_loss(loss, label) * len(y)
            correct += int((out.argmax(1) == y).sum())
            seen += len(y)
            step += 1
            if step % cfg.arch_step_every == 0:
                hx, hy = next(held)
                a_loss, ce = _arch_loss(net, hx, hy, alpha, alive, active, costs, cfg, rng)
                (grad,) = torch.autograd.grad(a_loss, [alpha])
                alpha.grad = grad * torch.as_tensor(alive, device=grad.device)
                arch_opt.step()
                arch_ce.append(finite_loss(ce, f"{label} (architecture step)"))
                drop_candidates(alpha, alive, active, protected, cfg.drop_threshold, drops, step)
        with torch.no_grad():
            probs = torch.sigmoid(alpha).cpu().numpy()
            expected = float(costs.expected(torch.sigmoid(alpha) * torch.as_tensor(alive, device=alpha.device)))
        row = {
            "train_loss": loss_sum / max(seen, 1),
            "train_acc": 100.0 * correct / max(seen, 1),
            "arch_ce": float(np.mean(arch_ce)) if arch_ce else float("nan"),
            "mean_alpha_prob": float(probs[alive].mean()) if alive.any() else 0.0,
            "expected_flops": expected,
            "alive_ops": int(alive.sum()),
        }
        log_epoch(tracker, desc, epoch + 1, cfg.epochs, row, step=epoch)
        epochs.append(row)
        extra = {"alive": torch.as_tensor(alive), "drops": drops, "epochs": epochs, "step": step}
        checkpoint.save({**capture(**parts), **extra}, f"epoch {epoch + 1}/{cfg.epochs}")

    # Round end: sample near the target (and a lower band), score with shared weights, take the front.
    p_sample = np.where(alive, _clamped(alpha).detach().cpu().double().numpy(), 0.0)
    picks = sample_band_archs(p_sample, costs.flops, cfg, rng)
    candidates = picks + prev_front_bits(state, active, alive.shape, picks)
    rows: list[FrontRow] = []
    recal = int(train_cfg["bn_recal_batches"])
    score_val = recal_subset(val, cfg.score_images) if 0 < cfg.score_images < len(val) else val
    for bits, band, in_band in tqdm(candidates, desc=f"{desc} scoring", file=sys.stderr, mininterval=5, leave=False):
        ops = [_names(a, np.arange(len(a)), bits[i, : len(a)]) for i, a in enumerate(active)]
        arch = space.from_ops(ops)
        acc, _ = score_arch(net, ops, train, score_val, recal, batch_size)
        rows.append(FrontRow(space.to_string(arch), space.flops(arch), space.params(arch), acc, band, ops, in_band))
    on_front = pareto_mask(rows)
    for r, on in zip(rows, on_front):
        r.on_front = bool(on)

    k = int(space_cfg["k"])
    new_state, op_stats, best = update_state(state, rows, alpha.detach().cpu().numpy(), k, cfg.alpha_init)
    summary = {
        "front_size": int(sum(r.on_front for r in rows)),
        "scored": len(rows),
        "in_band": sum(1 for r in rows if r.band == "near" and r.in_band),
        "in_lower_band": sum(1 for r in rows if r.band == "lower" and r.in_band),
        "prev_front_scored": sum(1 for r in rows if r.band == "prev_front"),
        "prev_front_kept": sum(1 for r in rows if r.band == "prev_front" and r.on_front),
        "best_front_acc": best.acc,
        "best_front_flops": best.flops,
        "best_front_arch": best.arch,
        "alpha_dropped": len(drops),
        "kept": sum(1 for s in op_stats if s["status"] == "kept"),
        "dropped": sum(1 for s in op_stats if s["status"] == "dropped"),
        "added": sum(1 for s in op_stats if s["status"] == "added"),
    }
    return NSEResult(new_state, rows, op_stats, epochs, summary, net, alpha.detach().cpu(), alive)


def drop_candidates(
    alpha: Tensor,
    alive: np.ndarray,
    active: list[list[str]],
    protected: list[set[str]],
    threshold: float,
    drops: dict[tuple[int, int], float],
    step: int,
) -> None:
    """Candidates whose α fell below the threshold leave the round, unless last round's best used them."""
    a = alpha.detach().cpu().numpy()
    for i, j in zip(*np.nonzero(alive & (a < threshold))):
        if active[i][j] not in protected[i]:
            alive[i, j] = False
            drops[(int(i), int(j))] = float(step)


def round_files(result: NSEResult) -> RoundFiles:
    """front.csv: every scored arch, on_front 1 on the Pareto front; op_stats.csv: per-op α and fate;
    the model file also keeps which branches were still alive."""
    front = [
        {"arch": r.arch, "flops": r.flops, "params": r.params, "acc": rounded(r.acc, 4), "on_front": int(r.on_front)}
        for r in result.front
    ]
    return RoundFiles(front, result.op_stats, OP_STATS_COLUMNS, {"alive": torch.as_tensor(result.alive)})


NSE = SpaceEvolution(config=NSEConfig, run=nse_round, files=round_files)  # EVOLUTION["nse"]
