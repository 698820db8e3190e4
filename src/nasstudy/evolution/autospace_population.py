"""AutoSpace's numpy half: the config, local mutation, tournaments, the population update.

Kept apart from `autospace_supernet.py` (the torch half: supernet and α training), as `nse_front.py`
is from `nse_supernet.py`: this part needs no torch and is easy to test on its own.
docs/autospace.md gives the reasons.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from nasstudy.spaces.mobile_blocks import as_cell, check_op
from nasstudy.spaces.mobile_cells import mutate_cell
from nasstudy.utils import config_from_params

MUTATION_TRIES = 50  # walk steps per missing member before the population is left one short


@dataclass(frozen=True)
class AutoSpaceConfig:
    """The `evolution.autospace` params (same names); None means "take it from the space"."""

    epochs: int = 3
    population: int = 8  # cells kept per position (the reference included)
    k: int | None = None  # candidates stacked per position per step besides the reference; None = space k
    tournament: int = 2
    n_mutants: int = 2  # at least this many members per position are replaced by mutants each generation
    alpha_lr: float = 0.05
    alpha_every: int = 5  # one α step every this many weight steps
    flops_target: float | None = None  # None = no budget term
    flops_lambda: float = 1.0e-12
    reference: tuple[str, ...] | None = None  # one op per position; None = first active op of each position
    keep_top: int | None = None  # size of the learned space per position; None = space k
    score_images: int = 0  # val images to score the reference and the fittest arch on; 0 = all
    holdout_frac: float = 0.2  # share of the train split kept for α steps
    fitness_ema: float = 0.5  # weight of this generation's α evidence in the fitness update
    survive_margin: float = 1.0  # a candidate survives while fitness >= -margin (fitness 0 = the reference)

    def __post_init__(self) -> None:
        ints = ("epochs", "population", "tournament", "n_mutants", "alpha_every", "score_images")
        for name in ints + ("k", "keep_top"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, int(v))
        for name in ("alpha_lr", "flops_lambda", "holdout_frac", "fitness_ema", "survive_margin", "flops_target"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, float(v))
        if self.reference is not None:
            if isinstance(self.reference, str) or not all(isinstance(op, str) for op in self.reference):
                _bad("reference", self.reference, "must be a list of op names, one per position")
            for op in self.reference:
                try:
                    check_op(op)
                except ValueError as e:
                    _bad("reference", self.reference, str(e))
            object.__setattr__(self, "reference", tuple(self.reference))
        for name, lo in (("epochs", 1), ("population", 2), ("tournament", 1), ("alpha_every", 1), ("k", 1)):
            if getattr(self, name) is not None and getattr(self, name) < lo:
                _bad(name, getattr(self, name), f"must be >= {lo}")
        for name in ("n_mutants", "score_images"):
            if getattr(self, name) < 0:
                _bad(name, getattr(self, name), "must be >= 0")
        if self.n_mutants >= self.population:
            _bad("n_mutants", self.n_mutants, f"must be below population = {self.population} (the reference stays)")
        if self.keep_top is not None and not 1 <= self.keep_top <= self.population:
            _bad("keep_top", self.keep_top, f"must be between 1 and population = {self.population}")
        if not 0 < self.holdout_frac < 1:
            _bad("holdout_frac", self.holdout_frac, "must be in (0, 1)")
        if not 0 < self.fitness_ema <= 1:
            _bad("fitness_ema", self.fitness_ema, "must be in (0, 1]")
        for name in ("alpha_lr", "flops_target"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                _bad(name, getattr(self, name), "must be > 0")
        for name in ("flops_lambda", "survive_margin"):
            if getattr(self, name) < 0:
                _bad(name, getattr(self, name), "must be >= 0")

    @classmethod
    def from_params(cls, params: dict) -> AutoSpaceConfig:
        """From the `evolution.autospace` params section; an unknown key is an error naming it and the known ones."""
        return config_from_params(cls, params, "evolution.autospace")

    def to_params(self) -> dict:
        """Plain types (the reference as a list), for logging and JSON."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["reference"] = None if self.reference is None else list(self.reference)
        return out


def _bad(key: str, value: object, why: str) -> None:
    raise ValueError(f"evolution.autospace.{key} = {value!r} {why}")


def cell_key(op: str) -> str:
    """The canonical cell name of an op: one key per distinct cell (`mb3_e3` and `g3_0k3` are one)."""
    return as_cell(op).name


def mutate_op(op: str, rng: np.random.Generator) -> str:
    """A local mutation of the cell `op` stands for (an MBConv op is its one-edge cell): one
    change of edge op, expansion, edge or node (`mutate_cell`); the child's canonical name."""
    return mutate_cell(as_cell(op), rng)[0].name


def tournament(candidates: list[int], scores: np.ndarray, n: int, size: int, rng: np.random.Generator) -> list[int]:
    """`n` distinct picks: each the best-scoring of `size` drawn at random from those left (ties: lower index)."""
    left, picks = list(candidates), []
    for _ in range(min(n, len(left))):
        drawn = rng.choice(len(left), size=min(size, len(left)), replace=False)
        best = max((int(d) for d in drawn), key=lambda d: (float(scores[left[d]]), -left[d]))
        picks.append(left.pop(best))
    return picks


def _mutants(members: list[dict], taken: set[str], count: int, size: int, rng: np.random.Generator) -> list[dict]:
    """`count` new members, each a mutation of a tournament-picked parent, none whose cell is in `taken`
    (a set of `cell_key`s, updated).

    A child that is already taken takes one more local step (a short random walk), so a used-up
    neighbourhood is left rather than the population shrinking; after MUTATION_TRIES steps it gives up.
    """
    scores = np.array([m["fitness"] for m in members], dtype=np.float64)
    out: list[dict] = []
    for _ in range(count):
        parent = members[tournament(list(range(len(members))), scores, 1, size, rng)[0]]["op"]
        child = mutate_op(parent, rng)
        for _ in range(MUTATION_TRIES):
            if child not in taken:  # children are canonical cell names, i.e. their own keys
                taken.add(child)
                out.append({"op": child, "fitness": 0.0, "age": 0, "parent": parent})
                break
            child = mutate_op(child, rng)
    return out


def start_population(
    pos: dict, reference: str, size: int, tsize: int, rng: np.random.Generator
) -> tuple[list[dict], list[str]]:
    """(members, untried pool ops) of one position: the stored population, or a new one from active + queue.

    A new population takes the position's ops in order (the reference forced in), all at fitness 0,
    and is filled up to `size` with mutants where the pool is smaller.
    """
    if "population" in pos:
        members = [{"op": m["op"], "fitness": float(m["fitness"]), "age": int(m["age"])} for m in pos["population"]]
        names = {m["op"] for m in members}
        if reference not in names:
            raise ValueError(f"reference op {reference!r} is missing from the stored population {sorted(names)}")
        return members, [op for op in pos.get("queue", []) if op not in names]
    ops = list(dict.fromkeys([*pos["active"], *pos.get("queue", [])]))
    chosen = ops[:size]
    if reference not in chosen:
        chosen = [reference, *chosen[: size - 1]]
    members = [{"op": op, "fitness": 0.0, "age": 0} for op in chosen]
    fill = _mutants(members, {cell_key(op) for op in chosen}, size - len(members), tsize, rng)
    members += [{k: m[k] for k in ("op", "fitness", "age")} for m in fill]
    return members, [op for op in ops if op not in chosen]


def evolve_position(
    members: list[dict],
    untried: list[str],
    reference: str,
    rel_alpha: np.ndarray,
    evidence: np.ndarray,
    picks: np.ndarray,
    cfg: AutoSpaceConfig,
    keep_top: int,
    rng: np.random.Generator,
) -> tuple[dict, list[dict]]:
    """One position's generation end: fitness update, yardstick rule, mutants, the learned space.

    Returns the next position state and its fitness rows (position column left to the caller).
    """
    beta, size = cfg.fitness_ema, cfg.population
    ref = next(j for j, m in enumerate(members) if m["op"] == reference)
    fit = np.array([m["fitness"] for m in members], dtype=np.float64)
    for j in range(len(members)):
        if evidence[j] and j != ref:
            fit[j] = (1.0 - beta) * fit[j] + beta * float(rel_alpha[j])
    fit[ref] = 0.0  # the yardstick: every fitness is measured against the reference
    others = [j for j in range(len(members)) if j != ref]
    out = {j for j in others if fit[j] < -cfg.survive_margin}
    for j in sorted(others, key=lambda j: (fit[j], -members[j]["age"], j)):
        if len(out) >= min(cfg.n_mutants, len(others)):
            break
        out.add(j)
    survivors = [
        {"op": m["op"], "fitness": float(fit[j]), "age": int(m["age"]) + 1}
        for j, m in enumerate(members)
        if j not in out
    ]
    taken = {cell_key(m["op"]) for m in members}
    new = _mutants(survivors, taken, size - len(survivors), cfg.tournament, rng)
    ranked = sorted(range(len(survivors)), key=lambda j: (-survivors[j]["fitness"], j))
    top = [survivors[j]["op"] for j in ranked[:keep_top]]
    if reference not in top:
        top[-1] = reference
    rest = [survivors[j]["op"] for j in ranked if survivors[j]["op"] not in top]
    new_ops = {m["op"] for m in new}
    state = {
        "active": top,
        "queue": rest + [m["op"] for m in new] + [op for op in untried if op not in new_ops],
        "population": survivors + [{k: m[k] for k in ("op", "fitness", "age")} for m in new],
        "reference": reference,
    }
    rows = []
    for j, m in enumerate(members):
        status = "reference" if j == ref else "dropped" if j in out else "kept"
        rows.append(_row(m["op"], fit[j], status, rel_alpha[j], picks[j], m["op"] in top, ""))
    rows += [_row(m["op"], 0.0, "new", 0.0, 0, False, m["parent"]) for m in new]
    return state, rows


def _row(op: str, fitness: float, status: str, alpha: float, picks: int, active: bool, parent: str) -> dict:
    return {
        "op": op,
        "fitness": round(float(fitness), 6),
        "status": status,
        "alpha": round(float(alpha), 6),
        "picks": int(picks),
        "active": int(active),
        "parent": parent,
    }
