"""Regularized evolution (Real et al., AAAI 2019): tournament selection, one mutation, aging."""

from __future__ import annotations

import numpy as np

from nasstudy.methods.base import Arch, SearchMethod, Space, as_arch


class RegularizedEvolution(SearchMethod):
    """Warm up with `population` random archs; then each child is a mutation of the best of
    `tournament` archs drawn (without replacement) from the population, and the oldest member dies.

    The population is always the last `population` archs told, so the history alone rebuilds it
    (nothing extra to save). A batched `ask(n)` runs n tournaments on the current population.
    Unlike the paper, a child already evaluated is re-mutated (up to `child_tries` times), so that
    the query budget buys new archs; if every try repeats, the repeat is returned as is.
    """

    name = "rea"
    child_tries = 100

    def __init__(self, space: Space, rng: np.random.Generator, population: int = 16, tournament: int = 4) -> None:
        super().__init__(space, rng)
        if population < 1 or not 1 <= tournament <= population:
            raise ValueError(f"rea needs 1 <= tournament <= population, got {tournament=} {population=}")
        self.population_size = int(population)
        self.tournament_size = int(tournament)

    def config(self) -> dict:
        return {"population": self.population_size, "tournament": self.tournament_size}

    @property
    def population(self) -> list[tuple[Arch, dict]]:
        """The living members, oldest first (aging: a new member pushes the oldest out)."""
        return self.history[-self.population_size :]

    def _propose(self, n: int) -> list[Arch]:
        n_random = min(n, max(0, self.population_size - len(self.history)))
        out = self.sample_unseen(n_random)
        taken = self.seen | set(out)
        population = self.population
        for _ in range(n - n_random):
            # a first ask larger than the population has no one to mutate yet: sample instead
            child = self._child(population, taken) if population else self.sample_unseen(1, taken)[0]
            taken.add(child)
            out.append(child)
        return out

    def tournament(self, population: list[tuple[Arch, dict]]) -> Arch:
        """The best of `tournament` members drawn at random (the first drawn on ties)."""
        size = min(self.tournament_size, len(population))
        picks = self.rng.choice(len(population), size=size, replace=False)
        winner = max(picks, key=lambda i: population[i][1]["acc"])
        return population[winner][0]

    def _child(self, population: list[tuple[Arch, dict]], taken: set[Arch]) -> Arch:
        for _ in range(self.child_tries):
            child = as_arch(self.space.mutate(self.tournament(population), self.rng))
            if child not in taken:
                break
        return child
