"""The ask/tell base every search method shares.

A method sees only the space's generic API (`decision_sizes`, `sample`, `mutate`, `encode`,
`decode`, `to_string`), so the same code searches the mobile space through a supernet and
NAS-Bench-201 through a table. The base keeps the evaluated history, the rng and the
(de)serialisation; a method adds its proposal rule (`_propose`) and, if it keeps more than the
history can rebuild, `_extra_state` / `_load_extra_state`.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

Arch = tuple[int, ...]


class Space(Protocol):
    """What a method may use of a search space."""

    decision_sizes: list[int]

    def sample(self, rng: np.random.Generator) -> Arch: ...
    def mutate(self, arch: Arch, rng: np.random.Generator) -> Arch: ...
    def encode(self, arch: Arch) -> np.ndarray: ...
    def decode(self, vec: np.ndarray) -> Arch: ...
    def to_string(self, arch: Arch) -> str: ...


def as_arch(arch: Any) -> Arch:
    """A hashable tuple of plain ints (numpy ints and lists from JSON become the same key)."""
    return tuple(int(x) for x in arch)


def _plain(value: Any) -> Any:
    """numpy scalars to Python numbers, so metrics survive a JSON round trip unchanged."""
    return value.item() if isinstance(value, np.generic) else value


class SearchMethod:
    """Ask/tell search over a space. Subclasses set `name` and implement `_propose`.

    Knobs are explicit keyword arguments of the subclass's `__init__` (after `space`, `rng`);
    `make_method` checks a params dict against them. Between a `tell` and the next `ask`,
    `state_dict()` captures everything: loading it into a fresh method continues the search
    exactly as if it had never stopped.
    """

    name: str = ""
    sequential: bool = False  # True: each proposal should see every result before it (ask 1 at a time)
    max_tries: int = 10_000  # samples to find an unseen arch before giving up

    def __init__(self, space: Space, rng: np.random.Generator) -> None:
        self.space = space
        self.rng = rng
        self.history: list[tuple[Arch, dict]] = []  # (arch, metrics) in the order told
        self.seen: set[Arch] = set()

    # --- the public protocol ---------------------------------------------------------------

    def ask(self, n: int) -> list[Arch]:
        """Propose `n` archs to evaluate next."""
        if n < 1:
            raise ValueError(f"ask(n) needs n >= 1, got {n}")
        archs = [as_arch(a) for a in self._propose(n)]
        if len(archs) != n:
            raise RuntimeError(f"{type(self).__name__} proposed {len(archs)} archs, asked for {n}")
        return archs

    def tell(self, archs: list[Arch], metrics: list[dict]) -> None:
        """Record evaluated archs; each metrics dict needs at least `acc` (higher is better)."""
        if len(archs) != len(metrics):
            raise ValueError(f"tell got {len(archs)} archs but {len(metrics)} metrics")
        for arch, m in zip(archs, metrics):
            if "acc" not in m:
                raise ValueError(f"metrics for {self.space.to_string(arch)} lack 'acc': {sorted(m)}")
            arch = as_arch(arch)
            self.history.append((arch, {k: _plain(v) for k, v in m.items()}))
            self.seen.add(arch)
        self._observe(archs, metrics)

    def best(self) -> tuple[Arch, dict]:
        """The arch with the highest acc told so far (the earliest one on ties)."""
        return self.history[self.best_index()]

    def best_index(self) -> int:
        """0-based position in `history` of `best()`; `queries_to(best_index())` queries found it."""
        if not self.history:
            raise RuntimeError("best() before any tell()")
        accs = [m["acc"] for _, m in self.history]
        return int(np.argmax(accs))  # argmax returns the first maximum

    def queries_to(self, index: int) -> int:
        """Distinct archs in `history[: index + 1]`: the queries they cost where a repeat is a free
        cache lookup (a method may tell an arch again, e.g. REA's repeated child)."""
        return len({a for a, _ in self.history[: index + 1]})

    def state_dict(self) -> dict:
        """Everything needed to resume, as JSON-serialisable values."""
        return {
            "method": self.name,
            "config": self.config(),
            "rng": self.rng.bit_generator.state,
            "history": [{"arch": list(a), "metrics": dict(m)} for a, m in self.history],
            "extra": self._extra_state(),
        }

    def load_state_dict(self, d: dict) -> None:
        """Restore `state_dict()` output (also after a JSON round trip)."""
        if d.get("method") != self.name:
            raise ValueError(f"state is for method {d.get('method')!r}, not {self.name!r}")
        if d.get("config") != self.config():
            raise ValueError(f"state was saved with config {d.get('config')}, this method has {self.config()}")
        kind = type(self.rng.bit_generator).__name__
        if d["rng"].get("bit_generator") != kind:
            raise ValueError(f"state holds a {d['rng'].get('bit_generator')} rng state, this rng is {kind}")
        n = len(self.space.decision_sizes)
        history = [(as_arch(h["arch"]), dict(h["metrics"])) for h in d["history"]]
        for arch, _ in history:
            if len(arch) != n:
                raise ValueError(f"state holds an arch with {len(arch)} decisions, the space has {n}")
        self.rng.bit_generator.state = d["rng"]
        self.history = history
        self.seen = {a for a, _ in history}
        self._load_extra_state(d.get("extra") or {})

    def config(self) -> dict:
        """The method's knobs (kept in the state, so a resume under other knobs is refused)."""
        return {}

    # --- hooks and helpers for subclasses --------------------------------------------------

    def _propose(self, n: int) -> list[Arch]:
        raise NotImplementedError

    def _observe(self, archs: list[Arch], metrics: list[dict]) -> None:
        """Called after the base recorded a tell; override to update models (predictors, ...)."""

    def _extra_state(self) -> dict:
        """Method state the history cannot rebuild (JSON-serialisable)."""
        return {}

    def _load_extra_state(self, d: dict) -> None:
        pass

    def sample_unseen(self, n: int, exclude: set[Arch] | None = None) -> list[Arch]:
        """`n` distinct uniform samples never told and not in `exclude` (rejection sampling)."""
        taken = self.seen | (exclude or set())
        out: list[Arch] = []
        for _ in range(n):
            for _ in range(self.max_tries):
                arch = as_arch(self.space.sample(self.rng))
                if arch not in taken:
                    break
            else:
                raise RuntimeError(
                    f"no unseen arch in {self.max_tries} samples after {len(taken)} taken: space exhausted?"
                )
            taken.add(arch)
            out.append(arch)
        return out
