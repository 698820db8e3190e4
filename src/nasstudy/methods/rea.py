"""Regularized evolution (Real et al., AAAI 2019): tournament selection, one mutation, aging."""

from __future__ import annotations

import numpy as np

from nasstudy.methods.base import Arch, SearchMethod, Space


class RegularizedEvolution(SearchMethod):
    """Warm up with `population` random archs; then each child is one mutation of the best of
    `tournament` archs drawn (with replacement) from the population, and the oldest member dies.

    As in the paper, the first mutant is kept even when it was evaluated before: told back, it
    joins the population (the oldest dies) like any child, and an evaluator's cache answers it
    without charging a query. So aging stays strict (an aged-out arch can come back only as a new
    child) and the population is always the last `population` archs told, which the history alone
    rebuilds (nothing extra to save). The method is sequential (ask 1 at a time); a batched
    `ask(n)` runs n tournaments on the same population.
    """

    name = "rea"
    sequential = True

    def __init__(self, space: Space, rng: np.random.Generator, population: int = 10, tournament: int = 3) -> None:
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
        population = self.population
        for _ in range(n - n_random):
            if population:
                out.append(self.space.mutate(self.tournament(population), self.rng))
            else:  # a first ask larger than the population has no one to mutate yet: sample instead
                out += self.sample_unseen(1, set(out))
        return out

    def tournament(self, population: list[tuple[Arch, dict]]) -> Arch:
        """The best of `tournament` members drawn at random with replacement, as in the paper's
        Algorithm 1 and its reference code (the first drawn on ties)."""
        picks = self.rng.integers(len(population), size=self.tournament_size)
        winner = max(picks, key=lambda i: population[i][1]["acc"])
        return population[winner][0]
