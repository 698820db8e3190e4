"""Search methods: one file each, one line each in `METHODS` (like timm's model registry).

The registry names each method's class by its module path and imports it on first use, so a job
that runs one method pays only for that method's imports (torch for GA-NAS and WeakNAS; a table
search with random, rea or relativenas imports no torch at all).
"""

from __future__ import annotations

import inspect

import numpy as np

from nasstudy.methods.base import Arch, SearchMethod, Space
from nasstudy.utils import resolve

METHODS: dict[str, str] = {
    "random": "nasstudy.methods.random_search:RandomSearch",
    "rea": "nasstudy.methods.rea:RegularizedEvolution",
    "relativenas": "nasstudy.methods.relativenas:RelativeNAS",
    "ganas": "nasstudy.methods.ganas:GANAS",
    "weaknas": "nasstudy.methods.weaknas:WeakNAS",
}


def method_class(name: str) -> type[SearchMethod]:
    """The class of method `name`, imported now."""
    return resolve(METHODS, name, "search method")


def method_knobs(cls: type[SearchMethod]) -> list[str]:
    """The knob names a method takes: its `__init__` keywords after `space` and `rng`."""
    names = list(inspect.signature(cls.__init__).parameters)
    return [p for p in names if p not in ("self", "space", "rng")]


def make_method(name: str, space: Space, params: dict | None, rng: np.random.Generator) -> SearchMethod:
    """Build method `name` with its own knobs `params` (e.g. `params["search"]["rea"]`)."""
    cls = method_class(name)
    params = dict(params or {})
    unknown = sorted(set(params) - set(method_knobs(cls)))
    if unknown:
        allowed = ", ".join(method_knobs(cls)) or "none"
        raise ValueError(f"unknown parameter(s) {unknown} for search method {name!r}; allowed: {allowed}")
    return cls(space, rng, **params)


__all__ = ["METHODS", "Arch", "SearchMethod", "make_method", "method_class", "method_knobs"]
