"""evolve_space: one generation of search-space evolution (an NSE round or an AutoSpace generation) per job.

Reads the previous generation's space_state and writes the next one, with what the round measured:
NSE — the scored archs and their Pareto front, per-op α and fate; AutoSpace — the reference and the
fittest arch scored with shared weights (front.csv, on_front 0) and every population member's
fitness and fate (op_stats.csv); both — the trained supernet and metrics.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import torch

from nasstudy.checkpoint import NO_CHECKPOINT, Checkpoint
from nasstudy.evolution.autospace_supernet import FITNESS_COLUMNS, AutoSpaceConfig, AutoSpaceResult, autospace_round
from nasstudy.evolution.nse_supernet import NSEConfig, NSEResult, nse_round
from nasstudy.tracking import Tracker
from nasstudy.training import MixedPrecision, load_cls, make_generator, resolve_device, save_model_file
from nasstudy.utils import atomic_write_bytes, make_rng, read_json, seed_torch, write_json

STAGE = "evolve_space"
METHODS = ("nse", "autospace")
FRONT_COLUMNS = ["arch", "flops", "params", "acc", "on_front"]


def _csv_bytes(rows: list[dict], columns: list[str]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


def _round(x: float, nd: int = 6) -> float | None:
    """Rounded for stable bytes; NaN (an epoch without an architecture step) becomes null."""
    return None if x != x else round(float(x), nd)


def metrics_dict(result: NSEResult | AutoSpaceResult, method: str, gen: int) -> dict:
    """metrics.json: the round's summary plus per-epoch lists (no wall times: byte-identical reruns)."""
    out = {k: (_round(v) if isinstance(v, float) else v) for k, v in result.summary.items()}
    for key in result.epochs[0] if result.epochs else []:
        out[key] = [_round(e[key]) for e in result.epochs]
    out.update(method=method, gen=gen, active_per_position=[len(p["active"]) for p in result.state["positions"]])
    return out


def run(
    inputs: dict[str, Path],
    outputs: dict[str, Path],
    params: dict,
    wildcards: dict[str, str],
    tracker: Tracker,
    checkpoint: Checkpoint = NO_CHECKPOINT,
) -> None:
    """Inputs cls_train, cls_val, space_state; outputs space_state, front, op_stats, supernet, metrics.
    The round checkpoints after every epoch; a rerun after a crash continues from the last one."""
    method, gen = wildcards["method"], int(wildcards["gen"])
    if method not in METHODS:
        raise ValueError(f"unknown evolution method {method!r}: known methods are {list(METHODS)}")
    names = [STAGE, method, gen]
    seed, space_cfg, train_cfg = int(params["seed"]), params["space"], params["supernet"]
    knobs = params["evolution"].get(method, {})
    cfg = NSEConfig.from_params(knobs) if method == "nse" else AutoSpaceConfig.from_params(knobs)
    seed_torch(seed, *names, threads=int(params["threads"]))
    device = resolve_device(params["device"])
    channels_last = bool(train_cfg.get("channels_last", True))
    tracker.log_params({f"{method}.{k}": v for k, v in (vars(cfg) if method == "nse" else cfg.to_params()).items()})

    state = read_json(inputs["space_state"])
    train = load_cls(inputs["cls_train"], device, channels_last)
    val = load_cls(inputs["cls_val"], device, channels_last)
    round_fn = nse_round if method == "nse" else autospace_round
    result = round_fn(
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
        checkpoint=checkpoint,
        precision=MixedPrecision(device, bool(params.get("amp", False))),
    )

    write_json(outputs["space_state"], result.state)
    saved = result.supernet.to_model_file()
    if method == "nse":
        front = [
            {"arch": r.arch, "flops": r.flops, "params": r.params, "acc": _round(r.acc, 4), "on_front": int(r.on_front)}
            for r in result.front
        ]
        stats, stat_cols = result.op_stats, ["position", "op", "alpha", "prob", "front_count", "status"]
        saved.update(alive=torch.as_tensor(result.alive))
    else:
        front = [
            {**{k: r[k] for k in FRONT_COLUMNS[:3]}, "acc": _round(r["acc"], 4), "on_front": 0} for r in result.scored
        ]
        stats, stat_cols = result.fitness, FITNESS_COLUMNS
        saved.update(members=result.members)
    atomic_write_bytes(outputs["front"], _csv_bytes(front, FRONT_COLUMNS))
    atomic_write_bytes(outputs["op_stats"], _csv_bytes(stats, stat_cols))
    saved.update(alpha=result.alpha.clone(), gen=gen, method=method)
    save_model_file(saved, outputs["supernet"])
    metrics = metrics_dict(result, method, gen)
    write_json(outputs["metrics"], metrics)
    tracker.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float) and k not in ("gen",)})
    for key in ("front", "op_stats", "metrics"):
        tracker.log_artifact(outputs[key])
