"""evolve_space: one generation of search-space evolution (one NSE round) per Snakemake job.

Reads the previous generation's space_state and writes the next one, with what the round measured:
the scored archs and their Pareto front, per-op α and fate, the trained supernet, metrics.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import torch

from nasstudy.evolution.nse import NSEConfig, NSEResult, nse_round
from nasstudy.tracking import Tracker
from nasstudy.training import load_cls, make_generator, resolve_device, save_checkpoint
from nasstudy.utils import atomic_write_bytes, make_rng, read_json, seed_torch, write_json

STAGE = "evolve_space"
METHODS = ("nse",)


def _csv_bytes(rows: list[dict], columns: list[str]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


def _round(x: float, nd: int = 6) -> float | None:
    """Rounded for stable bytes; NaN (an epoch without an architecture step) becomes null."""
    return None if x != x else round(float(x), nd)


def metrics_dict(result: NSEResult, method: str, gen: int) -> dict:
    """metrics.json: the round's summary plus per-epoch lists (no wall times: byte-identical reruns)."""
    out = {k: (_round(v) if isinstance(v, float) else v) for k, v in result.summary.items()}
    for key in result.epochs[0] if result.epochs else []:
        out[key] = [_round(e[key]) for e in result.epochs]
    out.update(method=method, gen=gen, active_per_position=[len(p["active"]) for p in result.state["positions"]])
    return out


def run(
    inputs: dict[str, Path], outputs: dict[str, Path], params: dict, wildcards: dict[str, str], tracker: Tracker
) -> None:
    """Inputs cls_train, cls_val, space_state; outputs space_state, front, op_stats, supernet, metrics."""
    method, gen = wildcards["method"], int(wildcards["gen"])
    if method not in METHODS:
        raise ValueError(f"unknown evolution method {method!r}: known methods are {list(METHODS)}")
    names = [STAGE, method, gen]
    seed, space_cfg, train_cfg = int(params["seed"]), params["space"], params["supernet"]
    cfg = NSEConfig.from_params(params["evolution"].get(method, {}))
    seed_torch(seed, *names, threads=int(params["threads"]))
    device = resolve_device(params["device"])
    channels_last = bool(train_cfg.get("channels_last", True))
    tracker.log_params({f"nse.{k}": v for k, v in vars(cfg).items()})

    state = read_json(inputs["space_state"])
    train = load_cls(inputs["cls_train"], device, channels_last)
    val = load_cls(inputs["cls_val"], device, channels_last)
    result = nse_round(
        state,
        space_cfg,
        train,
        val,
        cfg,
        train_cfg,
        rng=make_rng(seed, *names),
        batch_gen=make_generator(seed, *names, "batches"),
        tracker=tracker,
        device=device,
        channels_last=channels_last,
        desc=f"{method} gen {gen}",
    )

    write_json(outputs["space_state"], result.state)
    front = [
        {"arch": r.arch, "flops": r.flops, "params": r.params, "acc": _round(r.acc, 4), "on_front": int(r.on_front)}
        for r in result.front
    ]
    atomic_write_bytes(outputs["front"], _csv_bytes(front, ["arch", "flops", "params", "acc", "on_front"]))
    stat_cols = ["position", "op", "alpha", "prob", "front_count", "status"]
    atomic_write_bytes(outputs["op_stats"], _csv_bytes(result.op_stats, stat_cols))
    ckpt = result.supernet.to_checkpoint()
    ckpt.update(alpha=result.alpha.clone(), alive=torch.as_tensor(result.alive), gen=gen, method=method)
    save_checkpoint(ckpt, outputs["supernet"])
    metrics = metrics_dict(result, method, gen)
    write_json(outputs["metrics"], metrics)
    tracker.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float) and k not in ("gen",)})
    for key in ("front", "op_stats", "metrics"):
        tracker.log_artifact(outputs[key])
