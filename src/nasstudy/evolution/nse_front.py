"""NSE's numpy half (docs/design.md#nse): its config, the round end (sample archs near the FLOPs
target, take the Pareto front, evolve the state).

Kept apart from `nse_supernet.py` (the torch half: supernet and α training) because this part is
plain numpy and is easy to test on its own; `table_evolution.py` reuses its Pareto front. See
`nse_supernet.py` for how NSE follows the authors' code.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import numpy as np

from nasstudy.utils import config_from_params


@dataclass(frozen=True)
class NSEConfig:
    """The `evolution.nse` params (same names), plus knobs params do not expose (yet)."""

    epochs: int = 3
    branch_prob: float = 0.5
    arch_step_every: int = 5
    alpha_lr: float = 0.05
    alpha_init: float = 0.0
    flops_target: float = 6.0e6
    flops_lambda: float = 1.0e-12
    drop_threshold: float = -0.5
    front_samples: int = 80
    lower_band_samples: int = 8
    flops_band: float = 0.3
    holdout_frac: float = 0.2  # share of the train split kept for architecture steps
    sample_cap: int = 200  # at most this many draws per wanted arch before falling back to nearest
    score_images: int = 0  # val images (evenly spread) to score each arch on; 0 = the whole val split

    def __post_init__(self) -> None:
        for f in fields(self):
            cast = int if f.type in ("int", int) else float
            object.__setattr__(self, f.name, cast(getattr(self, f.name)))

    @classmethod
    def from_params(cls, nse_params: dict) -> NSEConfig:
        """From the `evolution.nse` params section; an unknown key is an error, not silently ignored."""
        return config_from_params(cls, nse_params, "evolution.nse")

    def to_params(self) -> dict:
        """Every knob by name, for logging."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class FrontRow:
    """One scored arch: `band` is near, lower or prev_front; `in_band` is False for a nearest fallback."""

    arch: str
    flops: int
    params: int
    acc: float
    band: str
    ops: list[tuple[str, ...]]
    in_band: bool = True
    on_front: bool = field(default=False)


def bands(cfg: NSEConfig) -> tuple[tuple[float, float], tuple[float, float]]:
    """Near band [T(1−b), T(1+b)] and lower band [T(1−2b), T(1−b)) in MACs (ours; theirs: ±drift, then
    a band of width extra_drift below)."""
    t, b = cfg.flops_target, cfg.flops_band
    return (t * (1 - b), t * (1 + b)), (t * (1 - 2 * b), t * (1 - b))


def _distance(f: float, lo: float, hi: float) -> float:
    return max(lo - f, f - hi, 0.0)


def sample_band_archs(
    p: np.ndarray,
    flops_fn: Callable[[np.ndarray], np.ndarray],
    cfg: NSEConfig,
    rng: np.random.Generator,
) -> list[tuple[np.ndarray, str, bool]]:
    """Unique archs (as (positions, K) bool arrays), branch (i, j) on with probability p[i, j].

    Rejection-samples `front_samples` within the near band and `lower_band_samples` within the lower
    band, at most `sample_cap` draws per wanted arch; short bands are filled with the drawn archs
    nearest to them (`in_band` False). Returns (bits, band, in_band) in draw order.
    """
    (n_lo, n_hi), (l_lo, l_hi) = bands(cfg)
    want = {"near": cfg.front_samples, "lower": cfg.lower_band_samples}
    chosen: dict[str, list[bytes]] = {"near": [], "lower": []}
    seen: dict[bytes, tuple[np.ndarray, float]] = {}
    cap, drawn = cfg.sample_cap * (want["near"] + want["lower"]), 0
    while any(len(chosen[b]) < want[b] for b in want) and drawn < cap:
        chunk = min(512, cap - drawn)
        bits = rng.random((chunk, *p.shape)) < p
        flops = flops_fn(bits)
        drawn += chunk
        for k in range(chunk):
            key = bits[k].tobytes()
            if key in seen:
                continue
            seen[key] = (bits[k], float(flops[k]))
            f = float(flops[k])
            band = "near" if n_lo <= f <= n_hi else "lower" if l_lo <= f < l_hi else None
            if band is not None and len(chosen[band]) < want[band]:
                chosen[band].append(key)
    taken = set(chosen["near"]) | set(chosen["lower"])
    out: list[tuple[np.ndarray, str, bool]] = []
    for band, (lo, hi) in (("near", (n_lo, n_hi)), ("lower", (l_lo, l_hi))):
        out += [(seen[k][0], band, True) for k in chosen[band]]
        short = want[band] - len(chosen[band])
        if short > 0:  # fall back to the nearest drawn archs (dict order = draw order breaks ties)
            rest = sorted((k for k in seen if k not in taken), key=lambda k: _distance(seen[k][1], lo, hi))
            for k in rest[:short]:
                out.append((seen[k][0], band, False))
                taken.add(k)
    return out


def prev_front_bits(
    state: dict, active: list[list[str]], shape: tuple[int, int], picks: list[tuple[np.ndarray, str, bool]]
) -> list[tuple[np.ndarray, str, bool]]:
    """Last round's front archs (`state["front"]`) as (positions, K) bool arrays, to be scored again
    with this round's weights (band `prev_front`); an arch drawn again in the near band is not added
    twice. Their ops are protected, so each must still be active; ValueError names one that is not."""
    seen = {bits.tobytes() for bits, band, _ in picks if band == "near"}
    out: list[tuple[np.ndarray, str, bool]] = []
    for n, arch in enumerate(state.get("front", [])):
        if len(arch) != len(active):
            raise ValueError(f"space_state front arch {n} has {len(arch)} positions, the space {len(active)}")
        bits = np.zeros(shape, dtype=bool)
        for i, ops in enumerate(arch):
            for op in ops:
                if op not in active[i]:
                    raise ValueError(f"space_state front arch {n}: op {op!r} at position {i} is not active {active[i]}")
                bits[i, active[i].index(op)] = True
        if bits.tobytes() not in seen:
            seen.add(bits.tobytes())
            out.append((bits, "prev_front", True))
    return out


def pareto_mask(rows: list[FrontRow]) -> list[bool]:
    """Non-dominated rows (fewer FLOPs, higher acc); lower-band rows may dominate but never stay on.

    If lower-band rows dominate every other row, the most accurate other row (then fewest FLOPs) is
    the front, so that a round always keeps some ops.
    """
    f = np.array([r.flops for r in rows], dtype=np.float64)
    a = np.array([r.acc for r in rows], dtype=np.float64)
    eligible = np.array([r.band != "lower" for r in rows], dtype=bool)
    if not eligible.any():
        eligible[:] = True
    mask = []
    for i in range(len(rows)):
        dominated = np.any((f <= f[i]) & (a >= a[i]) & ((f < f[i]) | (a > a[i])))
        mask.append(bool(eligible[i] and not dominated))
    if rows and not any(mask):
        best = max(np.flatnonzero(eligible), key=lambda i: (a[i], -f[i]))
        mask[int(best)] = True
    return mask


def best_row(rows: list[FrontRow]) -> FrontRow:
    """The front arch with the highest accuracy, then the fewest FLOPs, then the smallest string."""
    front = [r for r in rows if r.on_front]
    return min(front, key=lambda r: (-r.acc, r.flops, r.arch))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def update_state(
    state: dict,
    rows: list[FrontRow],
    alpha: np.ndarray,
    k: int,
    alpha_init: float,
) -> tuple[dict, list[dict], FrontRow]:
    """Next state: ops used by a front arch survive (old order), the queue front tops up to k.

    As in the authors' `set_front`, the front archs are kept in the state (`front`, their ops per
    position: next round scores them again) and the union of their ops (= the survivors) becomes
    next round's `protected` (their `prev_best`). Also returns the op_stats rows (position, op,
    alpha, prob, front_count, status) and the best front row. Added ops carry `alpha_init`, the
    value they start the next round with.
    """
    front = [r for r in rows if r.on_front]
    best = best_row(rows)
    positions, stats = [], []
    for i, pos in enumerate(state["positions"]):
        active, queue = list(pos["active"]), list(pos["queue"])
        used = Counter(op for r in front for op in r.ops[i])
        survivors = [op for op in active if used[op] > 0]
        added = queue[: max(0, k - len(survivors))]
        for j, op in enumerate(active):
            a = float(alpha[i, j])
            status = "kept" if op in survivors else "dropped"
            stats.append(_stat(i, op, a, used[op], status))
        stats += [_stat(i, op, alpha_init, 0, "added") for op in added]
        positions.append({"active": survivors + added, "queue": queue[len(added) :], "protected": survivors})
    archs = [[list(ops) for ops in r.ops] for r in front]
    return {"positions": positions, "front": archs}, stats, best


OP_STATS_COLUMNS = ["position", "op", "alpha", "prob", "front_count", "status"]  # op_stats.csv


def _stat(position: int, op: str, alpha: float, front_count: int, status: str) -> dict:
    return {
        "position": position,
        "op": op,
        "alpha": round(alpha, 6),
        "prob": round(_sigmoid(alpha), 6),
        "front_count": int(front_count),
        "status": status,
    }
