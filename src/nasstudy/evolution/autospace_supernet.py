"""AutoSpace (Zhou et al., ICCV 2021), one generation per call (docs/design.md#autospace; choices in
docs/autospace.md): the torch half, the supernet and its α training. The numpy half (config,
mutation, tournaments, the population update) is `autospace_population.py`.

No code was released; we build it from the pipeline figure. Every position keeps a *population* of
cells (small DAGs of primitive ops, `spaces/mobile_cells.py`; an MBConv op is a one-edge cell),
each with a fitness score. A generation trains a fresh supernet holding every member:
per weight step each position stacks its reference op plus K members picked by tournament on
fitness, and outputs the softmax(α)-weighted sum of their outputs; α (one logit per (position,
member), the differentiable fitness score) steps by Adam on a held-out part of train every
`alpha_every` weight steps, optionally with a FLOPs budget term. At the end, each member's fitness
moves towards its α relative to the reference op's α (the yardstick: the reference always stays, at
fitness 0); members far below the reference, and at least `n_mutants` of the weakest, are replaced
by local mutants of tournament-picked fit members (one edge op, expansion, edge or node changed), and the top
`keep_top` by fitness (the reference always among them) become the learned space's active ops.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from nasstudy.checkpoint import NO_CHECKPOINT, Checkpoint, capture
from nasstudy.evolution import FRONT_COLUMNS, RoundFiles, SpaceEvolution, rounded
from nasstudy.evolution.autospace_population import AutoSpaceConfig, evolve_position, start_population, tournament
from nasstudy.evolution.nse_supernet import resume_round, weight_training
from nasstudy.spaces.mobile import MobileSpace, Supernet, position_shapes
from nasstudy.spaces.mobile_blocks import check_op, position_cost
from nasstudy.tracking import Tracker, log_epoch
from nasstudy.training import ClsData, MixedPrecision, finite_loss, iterate_batches, recal_subset, score_arch

__all__ = [
    "AUTOSPACE",
    "AutoSpaceConfig",
    "AutoSpaceResult",
    "FlopsModel",
    "autospace_round",
    "budget_penalty",
    "references",
    "round_files",
]

FITNESS_COLUMNS = ["position", "op", "fitness", "status", "alpha", "picks", "active", "parent"]
ADAM_BETAS = (0.5, 0.999)  # DARTS' architecture optimiser


@dataclass
class AutoSpaceResult:
    """What one generation produced: the next state and everything measured on the way."""

    state: dict
    fitness: list[dict]  # rows with FITNESS_COLUMNS, for fitness.csv / op_stats.csv
    epochs: list[dict]
    summary: dict
    scored: list[dict]  # the reference and the fittest arch, scored with shared weights (arch, flops, params, acc)
    supernet: Supernet
    alpha: Tensor  # (positions, population) raw logits, 0 where a position has fewer members
    members: list[list[str]]  # the op of each α column, per position


class FlopsModel:
    """Analytic MACs of one op per position: fixed parts plus a (positions, members) cost grid."""

    def __init__(self, space_cfg: dict, members: list[list[str]], width: int) -> None:
        shapes = position_shapes(space_cfg)
        self.cost = np.zeros((len(shapes), width), dtype=np.float64)
        for i, (ops, shape) in enumerate(zip(members, shapes)):
            for j, op in enumerate(ops):
                self.cost[i, j] = position_cost([op], *shape)[0]
        first = [[ops[0]] for ops in members]
        space = MobileSpace(space_cfg, {"positions": [{"active": a} for a in first]})
        self.fixed = float(space.flops((1,) * len(first))) - float(self.cost[:, 0].sum())

    def expected(self, weights: Tensor) -> Tensor:
        """E[MACs] when position i runs member j with probability weights[i, j] (rows sum to 1)."""
        return self.fixed + (weights * torch.as_tensor(self.cost, dtype=weights.dtype, device=weights.device)).sum()


def references(state: dict, cfg: AutoSpaceConfig) -> list[str]:
    """The reference op per position: the one stored in the state, else cfg.reference, else the first active op.

    A reference that changes between generations is an error: fitness is measured against it.
    """
    positions = state["positions"]
    if cfg.reference is not None and len(cfg.reference) != len(positions):
        raise ValueError(
            f"evolution.autospace.reference has {len(cfg.reference)} ops, the space has {len(positions)} positions"
        )
    out = []
    for i, pos in enumerate(positions):
        wanted = cfg.reference[i] if cfg.reference is not None else None
        stored = pos.get("reference")
        if stored is not None and wanted is not None and stored != wanted:
            raise ValueError(f"position {i}: reference {wanted!r} differs from the state's {stored!r}")
        op = stored or wanted or (pos["active"][0] if pos["active"] else None)
        if op is None:
            raise ValueError(
                f"position {i} has no active op to take as the reference; set evolution.autospace.reference"
            )
        check_op(op)
        out.append(op)
    return out


def _select(
    live: np.ndarray, sizes: list[int], refs: list[int], k: int, tsize: int, rng: np.random.Generator
) -> list[list[int]]:
    """Per position: the reference first, then K members by tournament on the live fitness."""
    out = []
    for i, (n, r) in enumerate(zip(sizes, refs)):
        others = [j for j in range(n) if j != r]
        out.append([r, *tournament(others, live[i], k, tsize, rng)])
    return out


def _forward(
    net: Supernet, x: Tensor, alpha: Tensor, sel: list[list[int]], members: list[list[str]], detach: bool
) -> Tensor:
    """Logits with each position's output the softmax(α)-weighted sum of its selected branches.

    `Position.forward` divides the gated sum by the branch count, so gates are n·softmax: the
    existing modules give Σ_j w_j·branch_j(x) (+ identity where shapes match) without a new module.
    """
    a = alpha.detach() if detach else alpha
    ops, gates = [], []
    for i, idx in enumerate(sel):
        w = torch.softmax(a[i, torch.as_tensor(idx, device=a.device)], dim=0)
        ops.append([members[i][j] for j in idx])
        gates.append(w * len(idx))
    return net(x, ops, gates)


def _weights(alpha: Tensor, mask: Tensor) -> Tensor:
    """softmax(α) over each position's members (padding gets weight 0)."""
    return torch.softmax(alpha.masked_fill(~mask, float("-inf")), dim=1)


def budget_penalty(alpha: Tensor, mask: Tensor, flops: FlopsModel, cfg: AutoSpaceConfig) -> Tensor:
    """λ·(E[MACs] − target)², E over every member by softmax(α): above the target it lowers the α of
    the members that cost more than the expectation, below it those that cost less."""
    return cfg.flops_lambda * (flops.expected(_weights(alpha, mask)) - cfg.flops_target) ** 2


def _relative(alpha: Tensor, refs: list[int]) -> np.ndarray:
    """α − α_reference per position: the only part of α the fitness reads (softmax ignores a shift)."""
    a = alpha.detach().cpu().double().numpy()
    return a - a[np.arange(len(refs)), refs][:, None]


def autospace_round(
    state: dict,
    space_cfg: dict,
    train: ClsData,
    val: ClsData,
    cfg: AutoSpaceConfig,
    train_cfg: dict,
    rng: np.random.Generator,
    batch_gen: torch.Generator,
    tracker: Tracker,
    device: torch.device | str = "cpu",
    channels_last: bool = False,
    desc: str = "autospace",
    checkpoint: Checkpoint = NO_CHECKPOINT,
    precision: MixedPrecision | None = None,
) -> AutoSpaceResult:
    """One AutoSpace generation on `state`; `train_cfg` holds batch_size, lr, momentum, weight_decay,
    bn_recal_batches. All randomness comes from `rng` and `batch_gen` (weight init included, drawn
    under a forked torch RNG), so feeding the returned state back gives the same run as one process.
    """
    k = int(cfg.k if cfg.k is not None else space_cfg["k"])
    keep_top = int(cfg.keep_top if cfg.keep_top is not None else space_cfg["k"])
    if keep_top > cfg.population:
        raise ValueError(f"evolution.autospace.keep_top = {keep_top} is larger than population = {cfg.population}")
    if len(state["positions"]) != len(position_shapes(space_cfg)):
        raise ValueError(f"state has {len(state['positions'])} positions, the space config another count")
    refs_op = references(state, cfg)
    pops, untried = [], []
    for pos, ref in zip(state["positions"], refs_op):
        m, u = start_population(pos, ref, cfg.population, cfg.tournament, rng)
        pops.append(m)
        untried.append(u)
    members = [[m["op"] for m in p] for p in pops]
    sizes = [len(p) for p in pops]
    refs = [ops.index(r) for ops, r in zip(members, refs_op)]
    width = max(sizes)
    mask_np = np.arange(width)[None, :] < np.array(sizes)[:, None]
    fitness = np.zeros((len(pops), width))
    for i, p in enumerate(pops):
        fitness[i, : len(p)] = [m["fitness"] for m in p]

    init_seed = int(rng.integers(2**62))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        net = Supernet(space_cfg, members)
    net, weight_data, held, steps_per_epoch, optimizer, scheduler = weight_training(
        net.to(device), train, cfg.holdout_frac, train_cfg, cfg.epochs, rng, batch_gen, channels_last
    )
    flops = FlopsModel(space_cfg, members, width)
    mask = torch.as_tensor(mask_np, device=device)
    alpha = torch.zeros((len(pops), width), device=device, requires_grad=True)
    budget = cfg.flops_target is not None and cfg.flops_lambda > 0
    batch_size = int(train_cfg["batch_size"])
    arch_opt = torch.optim.Adam([alpha], lr=cfg.alpha_lr, betas=ADAM_BETAS)
    beta = cfg.fitness_ema
    picks = np.zeros((len(pops), width), dtype=np.int64)  # times each member was stacked in an α step

    def live() -> np.ndarray:  # what the fitness would become now: the tournament's score
        return (1 - beta) * fitness + beta * _relative(alpha, refs)

    precision = precision or MixedPrecision(device)  # AMP for the weight steps; α steps stay float32
    parts = dict(net=net, optimizer=optimizer, scheduler=scheduler, alpha=alpha, arch_opt=arch_opt,
                 batch_gen=batch_gen, rng=rng, held=held, precision=precision)  # fmt: skip
    saved = resume_round(checkpoint, tracker, parts)  # continue after the last finished epoch
    epochs, step = saved["epochs"], saved["step"]
    if "picks" in saved:
        picks[:] = saved["picks"].numpy()
    for epoch in range(len(epochs), cfg.epochs):
        net.train()
        loss_sum, correct, seen, arch_ce, used = 0.0, 0, 0, [], set()
        batches = iterate_batches(weight_data, batch_size, batch_gen, drop_last=True)
        label = f"{desc} epoch {epoch + 1}/{cfg.epochs}"
        for x, y in tqdm(batches, total=steps_per_epoch, desc=label, file=sys.stderr, mininterval=5, leave=False):
            sel = _select(live(), sizes, refs, k, cfg.tournament, rng)
            used.update((i, j) for i, idx in enumerate(sel) for j in idx)
            with precision.autocast():
                out = _forward(net, x, alpha, sel, members, detach=True)
                loss = F.cross_entropy(out, y)
            precision.step(loss, optimizer)
            scheduler.step()
            loss_sum += finite_loss(loss, label) * len(y)
            correct += int((out.argmax(1) == y).sum())
            seen += len(y)
            step += 1
            if step % cfg.alpha_every == 0:
                hx, hy = next(held)
                sel = _select(live(), sizes, refs, k, cfg.tournament, rng)
                for i, idx in enumerate(sel):
                    picks[i, idx] += 1
                ce = F.cross_entropy(_forward(net, hx, alpha, sel, members, detach=False), hy)
                a_loss = ce + budget_penalty(alpha, mask, flops, cfg) if budget else ce
                (grad,) = torch.autograd.grad(a_loss, [alpha])
                alpha.grad = grad * mask
                arch_opt.step()
                arch_ce.append(finite_loss(ce, f"{label} (architecture step)"))
        rel = _relative(alpha, refs)
        with torch.no_grad():
            w = _weights(alpha, mask)
            row = {
                "train_loss": loss_sum / max(seen, 1),
                "train_acc": 100.0 * correct / max(seen, 1),
                "arch_ce": float(np.mean(arch_ce)) if arch_ce else float("nan"),
                "alpha_rel_mean": float(rel[mask_np].mean()),
                "alpha_rel_max": float(rel[mask_np].max()),
                "ref_weight": float(w[torch.arange(len(refs)), torch.as_tensor(refs)].mean()),
                "expected_flops": float(flops.expected(w)),
                "members_used": len(used),
            }
        log_epoch(tracker, desc, epoch + 1, cfg.epochs, row, step=epoch)
        epochs.append(row)
        extra = {"picks": torch.as_tensor(picks), "epochs": epochs, "step": step}
        checkpoint.save({**capture(**parts), **extra}, f"epoch {epoch + 1}/{cfg.epochs}")

    # Generation end: fitness from α, the yardstick rule, mutants, the learned space.
    rel = _relative(alpha, refs)
    evidence = (picks > 0) | budget  # α moved only for stacked members, or for all under the budget term
    positions, rows = [], []
    for i, p in enumerate(pops):
        pos_state, pos_rows = evolve_position(
            p, untried[i], refs_op[i], rel[i], evidence[i], picks[i], cfg, keep_top, rng
        )
        positions.append(pos_state)
        rows += [{"position": i, **r} for r in pos_rows]
    new_state = {"positions": positions}

    scored = _score(net, space_cfg, refs_op, positions, train, val, cfg, train_cfg)
    with torch.no_grad():
        expected = float(flops.expected(_weights(alpha, mask)))
    cand = [r["fitness"] for r in rows if r["status"] in ("kept", "dropped")]
    summary = {
        "best_fitness": float(max(cand)) if cand else 0.0,
        "mean_fitness": float(np.mean(cand)) if cand else 0.0,
        "new": sum(r["status"] == "new" for r in rows),
        "dropped": sum(r["status"] == "dropped" for r in rows),
        "kept": sum(r["status"] == "kept" for r in rows),
        "expected_flops": expected,
        "reference_acc": scored[0]["acc"],
        "reference_flops": scored[0]["flops"],
        "fittest_acc": scored[1]["acc"],
        "fittest_flops": scored[1]["flops"],
        "fittest_arch": scored[1]["arch"],
    }
    alpha_out = alpha.detach().cpu() * torch.as_tensor(mask_np)
    return AutoSpaceResult(new_state, rows, epochs, summary, scored, net, alpha_out, members)


def _score(
    net: Supernet,
    space_cfg: dict,
    refs: list[str],
    positions: list[dict],
    train: ClsData,
    val: ClsData,
    cfg: AutoSpaceConfig,
    train_cfg: dict,
) -> list[dict]:
    """The reference arch and the fittest arch (top member per position), one op each, with shared weights."""
    # Trained members only: survivors have age >= 1, this generation's mutants age 0 (not in the supernet).
    fittest = [max((m for m in p["population"] if m["age"] > 0), key=lambda m: m["fitness"])["op"] for p in positions]
    val_part = recal_subset(val, cfg.score_images) if 0 < cfg.score_images < len(val) else val
    out = []
    for kind, ops in (("reference", refs), ("fittest", fittest)):
        chosen = [(op,) for op in ops]
        space = MobileSpace(space_cfg, {"positions": [{"active": [op]} for op in ops]})
        arch = (1,) * len(ops)
        acc, _ = score_arch(
            net, chosen, train, val_part, int(train_cfg["bn_recal_batches"]), int(train_cfg["batch_size"])
        )
        out.append(
            {
                "kind": kind,
                "arch": space.to_string(arch),
                "flops": space.flops(arch),
                "params": space.params(arch),
                "acc": acc,
            }
        )
    return out


def round_files(result: AutoSpaceResult) -> RoundFiles:
    """front.csv: the reference and the fittest arch scored with shared weights (on_front 0: no
    front here); op_stats.csv: every member's fitness and fate; the model file also keeps the op of
    each α column."""
    front = [
        {**{k: r[k] for k in FRONT_COLUMNS[:3]}, "acc": rounded(r["acc"], 4), "on_front": 0} for r in result.scored
    ]
    return RoundFiles(front, result.fitness, FITNESS_COLUMNS, {"members": result.members})


AUTOSPACE = SpaceEvolution(config=AutoSpaceConfig, run=autospace_round, files=round_files)  # EVOLUTION["autospace"]
