"""RelativeNAS (Tan et al., TNNLS 2021; code EMI-Group/RelativeNAS): pairwise slow-fast learning.

A population of continuous vectors, one real number per decision, decoded by floor. Each epoch the
population is paired at random; both members of a pair are evaluated, the better one is the fast
learner, and only the slow learner moves towards it:

    v <- r1 * v + r2 * (x_fast - x_slow),   x_slow <- clip(x_slow + v, 0, size - 1e-6)

with r1, r2 ~ U(0, 1) per dimension. "Better" is the higher search metric (`acc`) by default, so
the method climbs the metric its target is defined on; the paper's rule, the lower validation loss,
is `compare="loss"` (on NAS-Bench-201 CIFAR-10 the arch with the best valid acc ranks only 58th by
valid loss). The method sees only evaluated metrics, so it runs against a table or a frozen
supernet as is; the paper's joint learning on shared weights (each pair member trains on the weight
set before it is validated, then the weights are merged) is `nasstudy.joint_training`, which the
search stage composes with this method pair after pair.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np

from nasstudy.methods.base import Arch, SearchMethod, Space, as_arch

EDGE = 1e-6  # a vector stays below `size`, so floor never leaves the decision's range
COMPARE = ("loss", "acc")


def decode_vector(x: np.ndarray, sizes: Sequence[int]) -> Arch:
    """Floor each entry and clip it to [0, size - 1]: the paper's decoding of a continuous vector."""
    hi = np.asarray(sizes, dtype=np.int64) - 1
    return as_arch(np.clip(np.floor(np.asarray(x, dtype=np.float64)), 0, hi).astype(np.int64))


def fast_index(a: dict, b: dict, compare: str = "acc") -> int:
    """0 if `a` is the fast learner of the pair, 1 if `b` is (ties: `a`).

    `compare="acc"`: higher acc wins. `"loss"`: lower validation loss wins; where either loss is
    missing or NaN (a table without a loss column) higher acc wins instead, so the rule never
    compares a number with a NaN.
    """
    if compare not in COMPARE:
        raise ValueError(f"compare must be one of {COMPARE}, got {compare!r}")
    if compare == "loss":
        la, lb = a.get("loss"), b.get("loss")
        if la is not None and lb is not None and not math.isnan(la) and not math.isnan(lb):
            return int(lb < la)
    return int(b["acc"] > a["acc"])


def relative_update(
    x_slow: np.ndarray, v_slow: np.ndarray, x_fast: np.ndarray, r1: np.ndarray, r2: np.ndarray, sizes: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """The slow learner's new (position, velocity); the velocity is kept unclipped, as in the paper."""
    v = r1 * v_slow + r2 * (x_fast - x_slow)
    x = np.clip(x_slow + v, 0.0, np.asarray(sizes, dtype=np.float64) - EDGE)
    return x, v


class RelativeNAS(SearchMethod):
    """Population of `population` continuous vectors (paper: 20), uniform in [0, size) at start,
    velocities zero; `compare` picks the fast learner by `acc` (the search metric, default) or by
    val `loss` (the paper).

    `ask(n)` hands out population members in the order of the epoch's random pairs (pair k is
    members 2k and 2k+1 of `ask(population)` asked at an epoch's start); a pair moves its slow
    learner as soon as both members are told. A member whose last pair is still open cannot be
    asked in the next epoch (its vector is not settled), so members already settled go first, and
    an ask that would need an unsettled one is refused (`available()` says how many can be had).
    When everything asked was told, any n <= population / 2 and any n that divides the population
    always works. `tell` must get the asked archs in the asked order. Repeats are proposed as the
    population has them (an evaluator's cache makes them free). Sequential: asked one at a time,
    a pair moves its slow learner before the next pair is asked.
    """

    name = "relativenas"
    sequential = True

    def __init__(self, space: Space, rng: np.random.Generator, population: int = 10, compare: str = "acc") -> None:
        super().__init__(space, rng)
        if population < 2 or population % 2:
            raise ValueError(f"relativenas needs an even population >= 2 (members are paired), got {population}")
        if compare not in COMPARE:
            raise ValueError(f"relativenas compare must be one of {COMPARE}, got {compare!r}")
        self.population_size = int(population)
        self.compare = compare
        self.sizes = [int(s) for s in space.decision_sizes]
        d = len(self.sizes)
        self.x = rng.random((population, d)) * np.asarray(self.sizes, dtype=np.float64)
        self.v = np.zeros((population, d))
        self.epoch = -1  # no epoch started yet: the first ask draws the first pairing
        self.order: list[int] = []  # this epoch's members, pair by pair
        self.asked: list[int] = []  # members of this epoch asked so far
        self.open_pairs: dict[str, dict] = {}  # "epoch:k" -> {"members": [a, b], "metrics": [.., ..]}
        self.pending: list[dict] = []  # asked, not told yet: {"pair", "slot", "arch"} in ask order

    def config(self) -> dict:
        return {"population": self.population_size, "compare": self.compare}

    def decode(self, member: int) -> Arch:
        return decode_vector(self.x[member], self.sizes)

    # --- asking ----------------------------------------------------------------------------

    def _unsettled(self) -> set[int]:
        """Members in an open pair of an earlier epoch: their vector may still move."""
        return {m for key, p in self.open_pairs.items() if _epoch_of(key) < self.epoch for m in p["members"]}

    def _current_unsettled(self) -> set[int]:
        """Members in an open pair of the current epoch (unsettled once the next epoch starts)."""
        return {m for key, p in self.open_pairs.items() if _epoch_of(key) == self.epoch for m in p["members"]}

    def available(self) -> int:
        """How many archs `ask` can hand out now, before any more results are told."""
        unasked = [m for m in self.order if m not in self.asked]
        unsettled = self._unsettled()
        ready = [m for m in unasked if m not in unsettled]
        if len(ready) < len(unasked):
            return len(ready)  # this epoch cannot finish yet, so the next one cannot start
        return len(ready) + self.population_size - len(self._current_unsettled())

    def _propose(self, n: int) -> list[Arch]:
        if n > self.available():
            free = self.available()
            raise RuntimeError(f"relativenas can hand out {free} more archs before the pending ones are told, not {n}")
        out = []
        for _ in range(n):
            if len(self.asked) == len(self.order):
                self._start_epoch()
            unsettled = self._unsettled()
            member = next(m for m in self.order if m not in self.asked and m not in unsettled)
            pos = self.order.index(member)
            arch = self.decode(member)
            self.asked.append(member)
            self.pending.append({"pair": f"{self.epoch}:{pos // 2}", "slot": pos % 2, "arch": list(arch)})
            out.append(arch)
        return out

    def _start_epoch(self) -> None:
        self.epoch += 1
        self.order = [int(m) for m in self.rng.permutation(self.population_size)]
        self.asked = []
        for k in range(self.population_size // 2):
            members = self.order[2 * k : 2 * k + 2]
            self.open_pairs[f"{self.epoch}:{k}"] = {"members": members, "metrics": [None, None]}

    # --- telling ---------------------------------------------------------------------------

    def tell(self, archs: list[Arch], metrics: list[dict]) -> None:
        """Record results of the oldest pending asks, in the order they were asked."""
        # everything is checked before anything is recorded, so a refused tell changes nothing
        if len(archs) != len(metrics):
            raise ValueError(f"tell got {len(archs)} archs but {len(metrics)} metrics")
        for arch, m in zip(archs, metrics):
            if "acc" not in m:
                raise ValueError(f"metrics for {self.space.to_string(as_arch(arch))} lack 'acc': {sorted(m)}")
        if len(archs) > len(self.pending):
            raise ValueError(f"told {len(archs)} archs but only {len(self.pending)} are pending")
        for arch, p in zip(archs, self.pending):
            if as_arch(arch) != as_arch(p["arch"]):
                want = self.space.to_string(as_arch(p["arch"]))
                raise ValueError(f"told {self.space.to_string(as_arch(arch))}, the next pending arch is {want}")
        super().tell(archs, metrics)

    def _observe(self, archs: list[Arch], metrics: list[dict]) -> None:
        for _, recorded in self.history[len(self.history) - len(archs) :]:
            p = self.pending.pop(0)
            pair = self.open_pairs[p["pair"]]
            pair["metrics"][p["slot"]] = dict(recorded)
            if all(x is not None for x in pair["metrics"]):
                self._resolve(pair)
                del self.open_pairs[p["pair"]]

    def _resolve(self, pair: dict) -> None:
        """Move the pair's slow learner towards its fast learner."""
        f = fast_index(*pair["metrics"], compare=self.compare)
        fast, slow = pair["members"][f], pair["members"][1 - f]
        d = len(self.sizes)
        r1, r2 = self.rng.random(d), self.rng.random(d)
        self.x[slow], self.v[slow] = relative_update(self.x[slow], self.v[slow], self.x[fast], r1, r2, self.sizes)

    # --- state -----------------------------------------------------------------------------

    def _extra_state(self) -> dict:
        return {
            "x": self.x.tolist(),
            "v": self.v.tolist(),
            "epoch": self.epoch,
            "order": list(self.order),
            "asked": list(self.asked),
            "open_pairs": copy.deepcopy(self.open_pairs),
            "pending": copy.deepcopy(self.pending),
        }

    def _load_extra_state(self, d: dict) -> None:
        x, v = np.asarray(d["x"], dtype=np.float64), np.asarray(d["v"], dtype=np.float64)
        if x.shape != self.x.shape or v.shape != self.v.shape:
            raise ValueError(f"state holds a population of shape {x.shape}, this method has {self.x.shape}")
        self.x, self.v = x, v
        self.epoch = int(d["epoch"])
        self.order = [int(m) for m in d["order"]]
        self.asked = [int(m) for m in d["asked"]]
        self.open_pairs = copy.deepcopy(d["open_pairs"])
        self.pending = copy.deepcopy(d["pending"])


def _epoch_of(key: str) -> int:
    return int(key.split(":")[0])
