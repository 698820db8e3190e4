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

from nasstudy.checkpoint import NO_CHECKPOINT, Checkpoint
from nasstudy.evolution import FRONT_COLUMNS, RoundResult, evolution_method, rounded
from nasstudy.tracking import Tracker
from nasstudy.training import MixedPrecision, load_cls, make_generator, resolve_device, save_model_file
from nasstudy.utils import atomic_write_bytes, make_rng, read_json, seed_torch, write_json

STAGE = "evolve_space"


def _csv_bytes(rows: list[dict], columns: list[str]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


def metrics_dict(result: RoundResult, method: str, gen: int) -> dict:
    """metrics.json: the round's summary plus per-epoch lists (no wall times: byte-identical reruns)."""
    out = {k: (rounded(v) if isinstance(v, float) else v) for k, v in result.summary.items()}
    for key in result.epochs[0] if result.epochs else []:
        out[key] = [rounded(e[key]) for e in result.epochs]
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
    evolution = evolution_method(method)
    names = [STAGE, method, gen]
    seed, space_cfg, train_cfg = int(params["seed"]), params["space"], params["supernet"]
    knobs = params["evolution"].get(method, {})
    cfg = evolution.config.from_params(knobs)
    seed_torch(seed, *names, threads=int(params["threads"]))
    device = resolve_device(params["device"])
    channels_last = bool(train_cfg.get("channels_last", True))
    tracker.log_params({f"{method}.{k}": v for k, v in cfg.to_params().items()})

    state = read_json(inputs["space_state"])
    train = load_cls(inputs["cls_train"], device, channels_last)
    val = load_cls(inputs["cls_val"], device, channels_last)
    result = evolution.run(
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
    files = evolution.files(result)
    atomic_write_bytes(outputs["front"], _csv_bytes(files.front, FRONT_COLUMNS))
    atomic_write_bytes(outputs["op_stats"], _csv_bytes(files.op_stats, files.op_stats_columns))
    saved = result.supernet.to_model_file()
    saved.update(files.model)
    saved.update(alpha=result.alpha.clone(), gen=gen, method=method)
    save_model_file(saved, outputs["supernet"])
    metrics = metrics_dict(result, method, gen)
    write_json(outputs["metrics"], metrics)
    tracker.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float) and k not in ("gen",)})
    for key in ("front", "op_stats", "metrics"):
        tracker.log_artifact(outputs[key])
