"""Space evolution on the nb201 space with a lookup table in place of the supernet
(docs/design.md#space-evolution-on-a-table-nas-bench-201): the table variants of NSE, AutoSpace
(`autospace_elite`) and random subspaces, for the bench_space study. The supernet versions are
`nse_supernet.py` and `autospace_supernet.py`; NSE's Pareto front comes from `nse_front.py`.

Each generation function takes (state, space_cfg, evaluator, cfg, rng) and returns a
`GenerationResult`; fitness comes from table queries of the *search* metric (the evaluator's
`acc`, e.g. cifar10_valid_acc), never from the reported test metric. Every random choice comes
from `rng`. Each keeps in the state an *elite* (`{"ops", "acc"}`: the best arch by the search
metric queried so far) that never leaves the subspace, so the best arch a method knows of in its
subspace never gets worse. NSE gets this from its own rule (last front's archs join the next
front); the other two need an explicit one. Table-mode readings:

- **NSE**: draw `samples` archs uniformly from the current subspace (repeats are free: the
  evaluator caches them); score last round's front archs again (`state["front"]`: cached, free;
  the authors' `prev_bests`) and take the Pareto front of (FLOPs, acc) with
  `nse_front.pareto_mask` over both. Per edge the ops used by a front arch survive in their old
  order (the authors' `prev_best`, the union of all front archs' ops); the rest go to the back of
  the queue (theirs leave the pool: with 5 ops and 30 generations the queue would run dry); the
  edge is topped up to `k` from the queue front. The most accurate arch queried so far stays on
  the front (it is always scored again and nothing beats it), so it is the elite.
- **AutoSpace-elite** (`autospace_elite`; a table variant under its own name, not the paper's
  AutoSpace nor our mobile one, whose reference is fixed): per edge a population (`population`
  ops: active, then the queue front) with a fitness each. Fitness of an op = mean acc of this
  generation's queried archs that use it minus the reference arch's acc. The reference arch starts
  as the `reference` op on every edge (default the last initial op) and then *follows the elite*:
  it is queried every generation (cached, free) and always active; a reference stuck at the poor
  start would hold one of the k slots per edge for nothing. When it moves up, every fitness moves
  down by the same step, so fitnesses stay relative to the current reference. The first
  measurement replaces the placeholder 0 (no prior to average with), later ones enter an EMA
  (`fitness_ema`), as the supernet version carries evidence across generations. Archs are drawn by
  a per-edge tournament (`tournament` members, highest fitness wins) over the whole *population*
  (with `population: 5`, the whole space), not only the k-op subspace: its query counts are not
  like-for-like with NSE's and random's. An untried member wins any tournament it enters. Why:
  fitness is in accuracy points relative to the reference, so a new member at 0 would sit above or
  below every tried op by accident; optimism gets it measured. At the end the `n_mutants` weakest
  tried members that are neither the reference nor active swap with the queue front (mutants = ops
  outside the population, untried first; the replaced op goes to the queue's back). Active = the
  reference op plus the top `k - 1` other tried members by fitness.
- **Random subspace** (baseline): each generation draws a fresh subspace of `k` ops per edge and
  queries `samples` archs in it (the same draws as NSE); the subspace kept is the best seen so far
  by its best queried search-metric value (its elite), so that, like the others, it is chosen
  without the oracle.

`subspace_oracle` gives the reported metric's best and mean over *all* archs of a subspace, read
from the table without charging queries: a measure for the report, never seen by a method. It can
still drop from one generation to the next: elitism keeps the best arch *queried*, and a subspace
may lose a better arch that nobody queried.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from nasstudy.config import schema
from nasstudy.evaluators import TableEvaluator
from nasstudy.evolution.nse_front import FrontRow, best_row, pareto_mask
from nasstudy.spaces.nb201 import OPS, Nb201Space
from nasstudy.utils import config_from_params, resolve


def schema_defaults() -> dict:
    """`methods.<name>` defaults from workflow/schemas/bench_space.schema.yaml: their only source, so
    that validated params and `TableEvoConfig()` agree."""
    props = schema("bench_space")["definitions"]["table_evo"]["properties"]
    return {key: spec["default"] for key, spec in props.items()}


_DEFAULTS = schema_defaults()


@dataclass(frozen=True)
class TableEvoConfig:
    """Knobs of the three table-mode generations (params `methods.<name>`; defaults from the schema)."""

    samples: int = _DEFAULTS["samples"]  # arch draws per generation (the query budget; cached repeats are free)
    k: int = _DEFAULTS["k"]  # ops per edge in the subspace
    population: int = _DEFAULTS["population"]  # AutoSpace: members per edge
    tournament: int = _DEFAULTS["tournament"]  # AutoSpace: members per tournament
    n_mutants: int = _DEFAULTS["n_mutants"]  # AutoSpace: members replaced per edge per generation
    fitness_ema: float = _DEFAULTS["fitness_ema"]  # AutoSpace: weight of the new measurement
    reference: str | None = _DEFAULTS["reference"]  # AutoSpace: initial reference op (None = last initial op)

    @classmethod
    def from_params(cls, params: dict) -> TableEvoConfig:
        """From a params section; an unknown key raises ValueError naming it."""
        return config_from_params(cls, params, "table-evolution")


@dataclass
class GenerationResult:
    """The next state, the distinct queries this generation spent, and what it measured."""

    state: dict
    queries: int
    measured: dict = field(default_factory=dict)


def full_space(space_cfg: dict) -> Nb201Space:
    """The whole nb201 space: the evaluator's space, so that any subspace's arch can be looked up."""
    return Nb201Space({**space_cfg, "initial_ops": None})


def _query(space: Nb201Space, evaluator: TableEvaluator, archs: list[tuple[int, ...]]) -> dict[tuple, dict]:
    """Metrics of each distinct arch of `space` (keyed by it), in draw order (dict order: deterministic).

    The evaluator works on the whole space (`full_space`): a subspace arch is looked up by its ops.
    """
    if evaluator.space.decision_sizes != [len(OPS)] * len(evaluator.space.decision_sizes):
        raise ValueError("table evolution needs an evaluator over the whole space (see full_space)")
    return {a: evaluator.evaluate(tuple(OPS.index(o[0]) for o in space.ops(a))) for a in dict.fromkeys(archs)}


def _update_elite(elite: dict | None, candidates: Iterable[tuple[Sequence[str], float]]) -> dict:
    """The best (ops per edge, search acc) seen so far; a tie keeps the older one, so it is deterministic."""
    for ops, acc in candidates:
        if elite is None or acc > elite["acc"]:
            elite = {"ops": list(ops), "acc": float(acc)}
    if elite is None:
        raise ValueError("no arch was scored")
    return elite


def subspace_oracle(space_cfg: dict, state: dict, evaluator: TableEvaluator, metric: str) -> tuple[float, float]:
    """(best, mean) of `metric` over every arch of the subspace, from the table rows: no query charged."""
    space = Nb201Space(space_cfg, state)
    values = [float(evaluator.rows[space.to_string(a)][metric]) for a in space.enumerate()]
    return max(values), float(np.mean(values))


def nse_table_generation(
    state: dict, space_cfg: dict, evaluator: TableEvaluator, cfg: TableEvoConfig, rng: np.random.Generator
) -> GenerationResult:
    """One NSE round by table: sample, score last front's archs again, Pareto front of (FLOPs, acc)
    over both, front ops survive, top up to k."""
    space = Nb201Space(space_cfg, state)
    before = evaluator.queries
    drawn = [space.sample(rng) for _ in range(cfg.samples)]
    prev = [space.from_ops(ops) for ops in state.get("front", [])]  # in the subspace: their ops survived
    scored = _query(space, evaluator, drawn + prev)  # an arch drawn again is scored once; repeats are free
    rows = [FrontRow(space.to_string(a), int(m["flops"]), int(m["params"]), m["acc"], "near", space.ops(a))
            for a, m in scored.items()]  # fmt: skip
    for row, on in zip(rows, pareto_mask(rows)):
        row.on_front = on
    front = [r for r in rows if r.on_front]
    best = best_row(rows)  # the most accurate front arch: the best arch queried so far, by induction
    edges = []
    for e, edge in enumerate(state["edges"]):
        used = {r.ops[e][0] for r in front}
        survivors = [op for op in edge["active"] if op in used]
        queue = list(edge["queue"]) + [op for op in edge["active"] if op not in used]
        added = queue[: max(0, cfg.k - len(survivors))]
        edges.append({"active": survivors + added, "queue": queue[len(added) :]})
    measured = {
        "sampled": len(set(drawn)),
        "rescored": len(set(prev) - set(drawn)),
        "front": len(front),
        "best_search_acc": best.acc,
    }
    next_state = {
        "edges": edges,
        "front": [[o[0] for o in r.ops] for r in front],
        "elite": {"ops": [o[0] for o in best.ops], "acc": float(best.acc)},
    }
    return GenerationResult(next_state, evaluator.queries - before, measured)


def _autospace_init(state: dict, cfg: TableEvoConfig) -> dict:
    """Population = active then queue ops, cut to `population`, the reference forced in."""
    state = copy.deepcopy(state)
    for edge in state["edges"]:
        if "population" in edge:
            continue
        ref = cfg.reference or edge["active"][-1]
        if ref not in edge["active"]:
            raise ValueError(f"reference op {ref!r} is not in the initial subspace {edge['active']}")
        order = [ref] + [op for op in [*edge["active"], *edge["queue"]] if op != ref]
        members = order[: max(cfg.population, cfg.k)]
        edge["reference"] = ref
        edge["population"] = [{"op": op, "fitness": 0.0, "tried": 0} for op in members]
        edge["queue"] = [op for op in order if op not in members]
    return state


def _tournament(members: list[dict], size: int, rng: np.random.Generator) -> str:
    picks = rng.choice(len(members), size=min(size, len(members)), replace=False)
    # An untried member wins any tournament it enters (optimistic start), then the highest fitness.
    return members[max(picks.tolist(), key=lambda i: (members[i]["tried"] == 0, members[i]["fitness"], -i))]["op"]


def autospace_table_generation(
    state: dict, space_cfg: dict, evaluator: TableEvaluator, cfg: TableEvoConfig, rng: np.random.Generator
) -> GenerationResult:
    """One AutoSpace-elite generation by table: tournament draws over the population, fitness vs the
    reference, which then follows the elite."""
    state = _autospace_init(state, cfg)
    full = full_space(space_cfg)
    before = evaluator.queries
    reference = tuple(OPS.index(edge["reference"]) for edge in state["edges"])
    drawn = [reference] + [
        tuple(OPS.index(_tournament(edge["population"], cfg.tournament, rng)) for edge in state["edges"])
        for _ in range(max(0, cfg.samples - 1))
    ]
    scored = _query(full, evaluator, drawn)
    ref_acc = scored[reference]["acc"]
    # Elitism: the reference arch becomes the best arch found so far (it was drawn from the
    # population, so its ops are members); fitnesses move with it so they stay relative to it.
    elite = _update_elite(state.get("elite"), [([OPS[i] for i in a], s["acc"]) for a, s in scored.items()])
    shift = elite["acc"] - ref_acc
    edges = []
    for e, edge in enumerate(state["edges"]):
        members, queue = copy.deepcopy(edge["population"]), list(edge["queue"])
        for m in members:
            accs = [s["acc"] for a, s in scored.items() if OPS[a[e]] == m["op"]]
            if accs:
                value = float(np.mean(accs)) - ref_acc
                m["fitness"] = (
                    value if m["tried"] == 0 else (1 - cfg.fitness_ema) * m["fitness"] + cfg.fitness_ema * value
                )
                m["tried"] += 1
            if m["tried"]:
                m["fitness"] -= shift
        ref = elite["ops"][e]
        if ref not in [m["op"] for m in members]:
            raise RuntimeError(f"edge {e}: the elite op {ref!r} is not in the population")
        ranked = sorted((m for m in members if m["op"] != ref and m["tried"]), key=lambda m: -m["fitness"])
        active = [ref] + [m["op"] for m in ranked[: cfg.k - 1]]
        weakest = [m for m in reversed(ranked) if m["op"] not in active][: cfg.n_mutants]
        for m in weakest:
            if not queue:
                break
            new = queue.pop(0)
            queue.append(m["op"])
            members[members.index(m)] = {"op": new, "fitness": 0.0, "tried": 0}
        edges.append({"active": active, "queue": queue, "population": members, "reference": ref})
    measured = {
        "sampled": len(scored),
        "reference_acc": ref_acc,
        "best_search_acc": max(s["acc"] for s in scored.values()),
    }
    return GenerationResult({"edges": edges, "elite": elite}, evaluator.queries - before, measured)


def random_subspace_generation(
    state: dict, space_cfg: dict, evaluator: TableEvaluator, cfg: TableEvoConfig, rng: np.random.Generator
) -> GenerationResult:
    """Baseline: a fresh random subspace of k ops per edge, `samples` draws; keep the best seen by search acc."""
    fresh = []
    for _ in state["edges"]:
        picks = sorted(rng.choice(len(OPS), size=cfg.k, replace=False).tolist())
        fresh.append({"active": [OPS[i] for i in picks], "queue": [op for i, op in enumerate(OPS) if i not in picks]})
    space = Nb201Space(space_cfg, {"edges": fresh})
    before = evaluator.queries
    scored = _query(space, evaluator, [space.sample(rng) for _ in range(cfg.samples)])
    best = max(m["acc"] for m in scored.values())
    kept = state.get("elite")
    if kept is None or best > kept["acc"]:
        elite = _update_elite(None, [([o[0] for o in space.ops(a)], m["acc"]) for a, m in scored.items()])
        next_state = {"edges": fresh, "elite": elite}
    else:
        next_state = copy.deepcopy(state)
    measured = {"sampled": len(scored), "best_search_acc": best, "drawn": [e["active"] for e in fresh]}
    return GenerationResult(next_state, evaluator.queries - before, measured)


GENERATIONS: dict[str, str] = {  # the registry style of methods/spaces/evolution: name -> "module:function"
    "nse": "nasstudy.evolution.table_evolution:nse_table_generation",
    "autospace_elite": "nasstudy.evolution.table_evolution:autospace_table_generation",
    "random": "nasstudy.evolution.table_evolution:random_subspace_generation",
}


def table_generation(name: str) -> Callable:
    """The generation function of table-evolution method `name` (ValueError naming the allowed ones)."""
    return resolve(GENERATIONS, name, "table evolution method")


__all__ = [
    "GENERATIONS",
    "table_generation",
    "GenerationResult",
    "TableEvoConfig",
    "autospace_table_generation",
    "full_space",
    "nse_table_generation",
    "random_subspace_generation",
    "schema_defaults",
    "subspace_oracle",
]
