"""Search methods: one file each, one line each in `METHODS` (like timm's model registry)."""

from __future__ import annotations

import inspect

import numpy as np

from nasstudy.methods.base import Arch, SearchMethod, Space
from nasstudy.methods.ganas import GANAS
from nasstudy.methods.random_search import RandomSearch
from nasstudy.methods.rea import RegularizedEvolution
from nasstudy.methods.relativenas import RelativeNAS
from nasstudy.methods.weaknas import WeakNAS

METHODS: dict[str, type[SearchMethod]] = {
    RandomSearch.name: RandomSearch,
    RegularizedEvolution.name: RegularizedEvolution,
    RelativeNAS.name: RelativeNAS,
    GANAS.name: GANAS,
    WeakNAS.name: WeakNAS,
}


def method_knobs(cls: type[SearchMethod]) -> list[str]:
    """The knob names a method takes: its `__init__` keywords after `space` and `rng`."""
    names = list(inspect.signature(cls.__init__).parameters)
    return [p for p in names if p not in ("self", "space", "rng")]


def make_method(name: str, space: Space, params: dict | None, rng: np.random.Generator) -> SearchMethod:
    """Build method `name` with its own knobs `params` (e.g. `params["search"]["rea"]`)."""
    if name not in METHODS:
        raise ValueError(f"unknown search method {name!r}; allowed: {', '.join(sorted(METHODS))}")
    cls = METHODS[name]
    params = dict(params or {})
    unknown = sorted(set(params) - set(method_knobs(cls)))
    if unknown:
        allowed = ", ".join(method_knobs(cls)) or "none"
        raise ValueError(f"unknown parameter(s) {unknown} for search method {name!r}; allowed: {allowed}")
    return cls(space, rng, **params)


__all__ = ["METHODS", "Arch", "SearchMethod", "make_method", "method_knobs"]
