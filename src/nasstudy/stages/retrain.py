"""retrain: train the searched architecture from scratch, then measure test accuracy, cost and latency.

Search ranks archs by inherited supernet weights; only a from-scratch training of the winner tells
what each (space, method) pair really found. Wall time and CPU latency go to timing.json, so that
metrics.json stays byte-identical across two CPU runs. `train_arch` and `write_results` are also the
ranking stage's (nasstudy.stages.ranking): its sampled archs are trained exactly as the winners.
"""

from __future__ import annotations

import copy
import csv
import io
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils import benchmark

from nasstudy.checkpoint import NO_CHECKPOINT, Checkpoint, capture, restore
from nasstudy.spaces import make_space
from nasstudy.spaces.mobile import build_net
from nasstudy.tracking import Tracker, log_cost, log_epoch
from nasstudy.training import (
    MixedPrecision,
    evaluate,
    load_cls,
    make_generator,
    resolve_device,
    save_model_file,
    sgd_cosine,
    train_epoch,
)
from nasstudy.utils import atomic_write_bytes, read_json, replicate_names, seed_torch, write_json

STAGE = "retrain"
CURVE_COLUMNS = ["epoch", "train_loss", "train_acc", "val_acc"]
LATENCY_RUN_SECONDS = 0.01  # per `retrain.latency_batches`: 20 -> 0.2 s of forwards, the Timer default


@dataclass
class Trained:
    """What train_arch hands to write_results: the trained net (contiguous memory) and its numbers."""

    net: nn.Module
    ops: list[tuple[str, ...]]
    curve: list[dict]
    test_acc: float
    val_acc: float
    train_seconds: float
    flops: int
    params: int


def run(
    inputs: dict[str, Path],
    outputs: dict[str, Path],
    params: dict,
    wildcards: dict[str, str],
    tracker: Tracker,
    checkpoint: Checkpoint = NO_CHECKPOINT,
) -> None:
    """Inputs cls_train, cls_val, cls_test, best; outputs model, metrics, timing, curve. Checkpoints
    after every epoch; a rerun after a crash continues from the last one."""
    names = [STAGE, wildcards["space"], wildcards["method"], *replicate_names(wildcards)]
    best = read_json(inputs["best"])
    trained = train_arch(inputs, params, names, best["ops"], best["arch"], tracker, checkpoint)
    write_results(outputs, params, trained, best["arch"], best.get("supernet_acc"), tracker)


def train_arch(
    inputs: dict[str, Path],
    params: dict,
    names: list,
    ops: list,
    arch: str,
    tracker: Tracker,
    checkpoint: Checkpoint = NO_CHECKPOINT,
) -> Trained:
    """Train the arch with `ops` from scratch on cls_train (val acc per epoch), then test it on cls_test.
    Every random draw derives from the study seed and `names` (the job's stage and wildcards)."""
    seed, cfg, space_cfg = int(params["seed"]), params["retrain"], params["space"]
    seed_torch(seed, *names, threads=int(params["threads"]))
    device = resolve_device(params["device"])
    precision = MixedPrecision(device, bool(params.get("amp", False)))
    channels_last = bool(cfg.get("channels_last", True))

    ops = [tuple(o) for o in ops]
    num_classes = int(space_cfg["num_classes"])
    flops, n_params = arch_cost(space_cfg, ops)
    tracker.log_params({"arch": arch, "flops": flops, "params": n_params})
    log_cost(tracker, {"flops": flops, "params": n_params})

    train = load_cls(inputs["cls_train"], device, channels_last)
    val = load_cls(inputs["cls_val"], device, channels_last)
    test = load_cls(inputs["cls_test"], device, channels_last)
    net = build_net(space_cfg, ops, num_classes).to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)

    epochs, batch_size = int(cfg["epochs"]), int(cfg["batch_size"])
    optimizer, scheduler = sgd_cosine(net, cfg, epochs * max(1, len(train) // batch_size))
    batch_gen = make_generator(seed, *names, "batches")
    curve: list[dict] = []
    saved = checkpoint.load()
    if saved is not None:
        restore(saved, net=net, optimizer=optimizer, scheduler=scheduler, batch_gen=batch_gen, precision=precision)
        curve = saved["curve"]
        for row in curve:
            tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
    start = time.perf_counter()
    for epoch in range(len(curve) + 1, epochs + 1):
        loss, acc = train_epoch(
            net, optimizer, train, batch_size, batch_gen, scheduler, augment=bool(cfg.get("augment", True)),
            desc=f"retrain epoch {epoch}/{epochs}", precision=precision,
        )  # fmt: skip
        val_acc, _ = evaluate(net, val)
        row = {"epoch": epoch, "train_loss": round(loss, 6), "train_acc": round(acc, 4), "val_acc": round(val_acc, 4)}
        curve.append(row)
        log_epoch(tracker, "retrain", epoch, epochs, {k: v for k, v in row.items() if k != "epoch"})
        state = capture(net=net, optimizer=optimizer, scheduler=scheduler, batch_gen=batch_gen, precision=precision)
        checkpoint.save({**state, "curve": curve}, f"epoch {epoch}/{epochs}")
    train_seconds = time.perf_counter() - start
    test_acc, _ = evaluate(net, test)

    net = net.to(memory_format=torch.contiguous_format)
    final_val = curve[-1]["val_acc"] if curve else round(evaluate(net, val)[0], 4)
    return Trained(net, ops, curve, test_acc, final_val, train_seconds, flops, n_params)


def write_results(
    outputs: dict[str, Path],
    params: dict,
    trained: Trained,
    arch: str,
    supernet_acc: float | None,
    tracker: Tracker,
) -> None:
    """metrics.json (byte-identical across CPU runs), timing.json (wall time, CPU latency), curve.csv,
    and model.pt where `outputs` asks for one (the ranking sample's retrains need no model)."""
    space_cfg, net = params["space"], trained.net
    if "model" in outputs:
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        save_model_file(
            {"space_cfg": copy.deepcopy(space_cfg), "ops": [list(o) for o in trained.ops],
             "num_classes": int(space_cfg["num_classes"]), "state_dict": state},
            outputs["model"],
        )  # fmt: skip
    write_curve(outputs["curve"], trained.curve)
    latency = cpu_latency_ms(net, int(space_cfg.get("image_size", 32)), int(params["retrain"]["latency_batches"]))

    metrics = {
        "test_acc": round(trained.test_acc, 4),
        "val_acc": trained.val_acc,
        "params": trained.params,
        "flops": trained.flops,
        "supernet_acc": supernet_acc,
        "arch": arch,
    }
    write_json(outputs["metrics"], metrics)
    timing = {"latency_ms": round(latency, 4), "train_seconds": round(trained.train_seconds, 3)}
    write_json(outputs["timing"], timing)
    tracker.log_metrics({"test_acc": trained.test_acc, "latency_ms": latency, "train_seconds": trained.train_seconds})
    tracker.log_artifact(outputs["curve"])


def arch_cost(space_cfg: dict, ops: list[tuple[str, ...]]) -> tuple[int, int]:
    """(MACs per image, params) from the space's analytic counts, for an arch given by its ops.

    A space whose active lists are exactly the chosen ops holds the arch "every branch on".
    """
    state = {"positions": [{"active": list(o), "queue": []} for o in ops]}
    space = make_space(space_cfg, state)
    arch = tuple(1 for _ in space.decision_sizes)
    return int(space.flops(arch)), int(space.params(arch))


@torch.inference_mode()
def cpu_latency_ms(net: nn.Module, image_size: int, repeats: int) -> float:
    """Median time (ms) of one single-image forward on CPU, one thread, from torch.utils.benchmark:
    blocks of forwards (block size chosen so the timer's overhead is negligible; this also warms up)
    run for at least `repeats` x 10 ms, and the median over blocks is taken. The clock is the calling
    thread's CPU time, so another job sharing the cores (which delays this one, but does not make
    its forward longer) does not inflate the number; docs/report.md says more."""
    model = copy.deepcopy(net).cpu().eval()
    x = torch.zeros(1, 3, image_size, image_size)
    timer = benchmark.Timer(stmt="model(x)", globals={"model": model, "x": x}, num_threads=1, timer=time.thread_time)
    return 1000.0 * timer.blocked_autorange(min_run_time=LATENCY_RUN_SECONDS * max(1, repeats)).median


def write_curve(path: str | Path, rows: list[dict]) -> None:
    """curve.csv (epoch, train_loss, train_acc, val_acc), written atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CURVE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())
