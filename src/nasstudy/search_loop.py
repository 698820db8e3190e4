"""The ask/tell loop of every search against an evaluator: the study's search stage (a supernet,
stages/search.py) and the table benchmark (a lookup table, benchmarks/search.py) run this one.

It asks a sequential method (REA, RelativeNAS) one arch at a time, so each proposal sees every
result before it, and the others `BATCH` at a time; an arch asked again is answered from the
evaluator's cache and costs no query, so the budget counts distinct archs. It stops at the budget,
when the method has stalled (the evaluator's `STALL_REPEATS` repeats in a row), or when the caller's
`stop` says so (the benchmark: the target is found), and calls `save` (a checkpoint) every `BATCH`
queries and once at the end.

RelativeNAS's joint learning (stages/search.py::search_jointly) has its own loop: each pair is
trained on the supernet before it is scored, so a repeat is scored again and charged, and the
shared weights change with every tell; no cache, no batch, a save after every pair.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from tqdm import tqdm

from nasstudy.evaluators import Evaluator
from nasstudy.methods.base import Arch, SearchMethod

BATCH = 10  # archs per ask for a method that is not sequential; queries between two saves


@dataclass
class Query:
    """One charged query of this run: its number (1-based, resumed queries counted), arch and metrics."""

    number: int
    arch: Arch
    metrics: dict


@dataclass
class SearchRun:
    """What one run of the loop did: its new queries in order and how many archs it asked for."""

    queries: list[Query] = field(default_factory=list)
    asks: int = 0


def ask_size(method: SearchMethod) -> int:
    """Archs per ask: 1 for a sequential method, else BATCH."""
    return 1 if method.sequential else BATCH


def search(
    method: SearchMethod,
    evaluator: Evaluator,
    budget: int,
    desc: str,
    stop: Callable[[], bool] | None = None,
    told: Callable[[list[Query]], None] | None = None,
    save: Callable[[], None] | None = None,
) -> SearchRun:
    """Ask, evaluate, tell until `budget` queries, a stall or `stop()`. `told(new)` runs after each tell
    with that round's new queries; `save()` every BATCH queries and when the loop ends. A resumed
    search starts from the queries its evaluator already holds."""
    run = SearchRun()
    saved = evaluator.queries

    def finished() -> bool:
        return evaluator.queries >= budget or evaluator.stalled() or (stop is not None and stop())

    with tqdm(total=budget, initial=evaluator.queries, desc=desc, file=sys.stderr, mininterval=5) as bar:
        while not finished():
            before = evaluator.queries
            archs = method.ask(min(ask_size(method), budget - evaluator.queries))
            run.asks += len(archs)
            metrics, new = [], []
            for arch in archs:
                seen = evaluator.queries
                metrics.append(evaluator.evaluate(arch))  # a repeat: from the cache, free
                if evaluator.queries > seen:
                    new.append(Query(evaluator.queries, arch, metrics[-1]))
            method.tell(archs, metrics)
            run.queries += new
            if told is not None:
                told(new)
            if save is not None and (evaluator.queries - saved >= BATCH or finished()):
                save()
                saved = evaluator.queries
            bar.update(evaluator.queries - before)
    return run


__all__ = ["BATCH", "Query", "SearchRun", "ask_size", "search"]
