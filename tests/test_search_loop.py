"""The one ask/tell loop (nasstudy.search_loop): ask sizes, free repeats, budget, stop, saves."""

from __future__ import annotations

from nasstudy import search_loop
from nasstudy.evaluators import Evaluator


class Echo(Evaluator):
    """acc = the arch's first entry."""

    def _evaluate(self, arch: tuple[int, ...]) -> dict:
        return {"acc": float(arch[0])}


class Scripted:
    """A method that proposes a fixed sequence of archs and records what it was asked and told."""

    def __init__(self, archs: list[int], sequential: bool) -> None:
        self.todo, self.sequential, self.asked, self.told = [(a,) for a in archs], sequential, [], []

    def ask(self, n: int) -> list[tuple[int, ...]]:
        self.asked.append(n)
        out, self.todo = self.todo[:n], self.todo[n:]
        return out

    def tell(self, archs: list, metrics: list) -> None:
        self.told += [(a, m["acc"]) for a, m in zip(archs, metrics, strict=True)]


def test_repeats_are_told_free_and_saves_come_every_batch_and_at_the_end() -> None:
    method, evaluator, saves = Scripted([1, 1, 2, *range(3, 30)], sequential=False), Echo(), []
    run = search_loop.search(method, evaluator, 25, "t", save=lambda: saves.append(evaluator.queries))
    assert method.asked == [10, 10, 6]  # never more than the budget left
    assert [q.number for q in run.queries] == list(range(1, 26)) and run.asks == 26
    assert method.told[:2] == [((1,), 1.0), ((1,), 1.0)]  # the repeat is told, not charged
    assert saves == [19, 25] and evaluator.queries == 25  # after the round that passes BATCH, and the last


def test_a_sequential_method_is_asked_one_at_a_time_and_stop_ends_the_loop() -> None:
    method, evaluator, seen = Scripted(list(range(50)), sequential=True), Echo(), []
    run = search_loop.search(method, evaluator, 50, "t", stop=lambda: len(seen) >= 3, told=seen.extend)
    assert set(method.asked) == {1} and [q.arch for q in run.queries] == [(0,), (1,), (2,)]
