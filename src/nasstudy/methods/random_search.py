"""Random search: the baseline every NAS method must beat (Li & Talwalkar, 2019)."""

from __future__ import annotations

from nasstudy.methods.base import Arch, SearchMethod


class RandomSearch(SearchMethod):
    """Uniform samples from the space, never the same arch twice (so each query is new)."""

    name = "random"

    def _propose(self, n: int) -> list[Arch]:
        return self.sample_unseen(n)
