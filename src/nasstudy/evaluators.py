"""Evaluators: what a search query costs and returns, kept apart from the methods that ask.

Every evaluator answers `evaluate(arch) -> {"acc", "loss", "flops", "params"}` (acc in percent)
and counts `queries`; an arch asked twice is answered from a cache and not counted again, so a
budget is a number of distinct archs however a method proposes them. `repeats_in_a_row` counts
the cache answers since the last new arch: a search loop stops a method that proposes nothing new
(`STALL_REPEATS` in a row) instead of spinning.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasstudy.methods.base import Arch, Space, as_arch

STALL_REPEATS = 10_000  # proposals in a row that are all repeats: the method has stalled

if TYPE_CHECKING:  # torch is imported by the supernet evaluator only: table lookups stay light
    from nasstudy.spaces.mobile import MobileSpace


class Evaluator:
    """The cache and the query counter; subclasses implement `_evaluate`."""

    def __init__(self) -> None:
        self.cache: dict[Arch, dict] = {}
        self.queries = 0
        self.repeats_in_a_row = 0

    def evaluate(self, arch: Arch) -> dict:
        """Metrics of `arch`; a repeat comes from the cache and costs no query."""
        arch = as_arch(arch)
        if arch in self.cache:
            self.repeats_in_a_row += 1
        else:
            self.cache[arch] = self._evaluate(arch)
            self.queries += 1
            self.repeats_in_a_row = 0
        return dict(self.cache[arch])

    def stalled(self) -> bool:
        """True once the last `STALL_REPEATS` archs asked were all repeats."""
        return self.repeats_in_a_row >= STALL_REPEATS

    def remember(self, arch: Arch, metrics: dict) -> None:
        """Take a result measured before (a resumed search): cached and counted, not recomputed."""
        arch = as_arch(arch)
        if arch not in self.cache:
            self.cache[arch] = dict(metrics)
            self.queries += 1

    def _evaluate(self, arch: Arch) -> dict:
        raise NotImplementedError


def space_from_model_file(saved: dict) -> MobileSpace:
    """The space a supernet was trained on, from what `Supernet.to_model_file()` stores."""
    from nasstudy.spaces.mobile import MobileSpace

    cfg = {**saved["space_cfg"], "num_classes": int(saved["num_classes"])}
    name = cfg.get("name", "mobile")
    if name != "mobile":
        raise ValueError(f"no supernet evaluator for space {name!r} (only 'mobile')")
    state = saved.get("space_state") or {"positions": [{"active": list(a), "queue": []} for a in saved["active"]]}
    return MobileSpace(cfg, state)


class SupernetEvaluator(Evaluator):
    """Inherited weights: BN recalibrated on the same few train batches for every arch, then
    accuracy and loss on the whole val split; flops/params analytic from the space."""

    def __init__(
        self,
        supernet: str | Path,
        train: str | Path,
        val: str | Path,
        bn_recal_batches: int = 4,
        batch_size: int = 128,
        device: str = "cpu",
    ) -> None:
        import torch

        from nasstudy.spaces.mobile import Supernet
        from nasstudy.training import load_cls, load_model_file, resolve_device

        super().__init__()
        for label, path in (("supernet model file", supernet), ("train split", train), ("val split", val)):
            if not Path(path).is_file():
                raise FileNotFoundError(f"{label} {path} does not exist")
        self.device = resolve_device(device)
        saved = load_model_file(supernet)
        self.space = space_from_model_file(saved)
        # channels_last: depthwise convs run about 1.5-2x faster on CPU (same results to rounding)
        self.supernet = Supernet.from_model_file(saved).to(self.device, memory_format=torch.channels_last)
        self.train = load_cls(train, self.device, channels_last=True)
        self.val = load_cls(val, self.device, channels_last=True)
        self.bn_recal_batches = int(bn_recal_batches)
        self.batch_size = int(batch_size)

    @classmethod
    def for_stage(cls, inputs: dict, params: dict) -> SupernetEvaluator:
        """The evaluator of a stage job that queries a supernet (search, ranking sample): its
        inputs supernet/cls_train/cls_val and params supernet.bn_recal_batches/batch_size, device."""
        return cls(
            inputs["supernet"],
            inputs["cls_train"],
            inputs["cls_val"],
            bn_recal_batches=params["supernet"]["bn_recal_batches"],
            batch_size=params["supernet"]["batch_size"],
            device=params["device"],
        )

    def _evaluate(self, arch: Arch) -> dict:
        from nasstudy.training import score_arch

        acc, loss = score_arch(
            self.supernet, self.space.ops(arch), self.train, self.val, self.bn_recal_batches, self.batch_size
        )
        return {
            "acc": float(acc),
            "loss": float(loss),
            "flops": self.space.flops(arch),
            "params": self.space.params(arch),
        }


class TableEvaluator(Evaluator):
    """Look-up in a benchmark CSV (NAS-Bench-201 style): an `arch` column of the space's canonical
    strings plus metric columns. `metric` becomes `acc`; `loss`, `flops` and `params` come from
    columns of those names when the table has them, else `loss` is NaN and the costs come from the
    space; `cost` (a column name) is returned as `cost` too; `loss` names the column read as `loss`
    (e.g. NAS-Bench-201's `cifar10_valid_loss`)."""

    def __init__(
        self, csv_path: str | Path, space: Space, metric: str, cost: str | None = None, loss: str | None = None
    ) -> None:
        super().__init__()
        path = Path(csv_path)
        if not path.is_file():
            raise FileNotFoundError(f"table {path} does not exist")
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            columns = list(reader.fieldnames or [])
            wanted = ["arch", metric] + ([cost] if cost else []) + ([loss] if loss else [])
            missing = [c for c in wanted if c not in columns]
            if missing:
                raise ValueError(f"table {path} lacks column(s) {missing}; it has {columns}")
            self.rows = {row["arch"]: row for row in reader}
        self.path, self.space, self.metric, self.cost = path, space, metric, cost
        self.loss = loss or "loss"

    def _evaluate(self, arch: Arch) -> dict:
        key = self.space.to_string(arch)
        row = self.rows.get(key)
        if row is None:
            raise KeyError(f"arch {key} is not in table {self.path}")
        out: dict[str, Any] = {
            "acc": float(row[self.metric]),
            "loss": float(row[self.loss]) if self.loss in row else math.nan,
            "flops": _number(row["flops"]) if "flops" in row else self.space.flops(arch),
            "params": _number(row["params"]) if "params" in row else self.space.params(arch),
        }
        if self.cost:
            out["cost"] = float(row[self.cost])
        return out


def _number(text: str) -> int | float:
    """An int when the table holds one (FLOPs, params), else a float."""
    value = float(text)
    return int(value) if value.is_integer() else value


__all__ = ["Evaluator", "SupernetEvaluator", "TableEvaluator", "space_from_model_file"]
