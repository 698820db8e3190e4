"""retrain: train the searched architecture from scratch, then measure test accuracy, cost and latency.

Search ranks archs by inherited supernet weights; only a from-scratch training of the winner tells
what each (space, method) pair really found. Wall time and CPU latency go to timing.json, so that
metrics.json stays byte-identical across two CPU runs.
"""

from __future__ import annotations

import copy
import csv
import io
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from nasstudy.checkpoint import NO_CHECKPOINT, Checkpoint, capture, restore
from nasstudy.spaces import make_space
from nasstudy.spaces.mobile import build_net
from nasstudy.tracking import Tracker
from nasstudy.training import (
    MixedPrecision,
    evaluate,
    load_cls,
    make_generator,
    resolve_device,
    save_checkpoint,
    sgd_cosine,
    train_epoch,
)
from nasstudy.utils import atomic_write_bytes, read_json, seed_torch, write_json

STAGE = "retrain"
CURVE_COLUMNS = ["epoch", "train_loss", "train_acc", "val_acc"]
LATENCY_WARMUP = 5


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
    names = [STAGE, wildcards["space"], wildcards["method"]]
    seed, cfg, space_cfg = int(params["seed"]), params["retrain"], params["space"]
    seed_torch(seed, *names, threads=int(params["threads"]))
    device = resolve_device(params["device"])
    precision = MixedPrecision(device, bool(params.get("amp", False)))
    channels_last = bool(cfg.get("channels_last", True))

    best = read_json(inputs["best"])
    ops = [tuple(o) for o in best["ops"]]
    num_classes = int(space_cfg["num_classes"])
    flops, n_params = arch_cost(space_cfg, ops)
    tracker.log_params({"arch": best["arch"], "flops": flops, "params": n_params})

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
        tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
        state = capture(net=net, optimizer=optimizer, scheduler=scheduler, batch_gen=batch_gen, precision=precision)
        checkpoint.save({**state, "curve": curve}, f"epoch {epoch}/{epochs}")
    train_seconds = time.perf_counter() - start
    test_acc, _ = evaluate(net, test)

    net = net.to(memory_format=torch.contiguous_format)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    save_checkpoint(
        {"space_cfg": copy.deepcopy(space_cfg), "ops": [list(o) for o in ops], "num_classes": num_classes,
         "state_dict": state},
        outputs["model"],
    )  # fmt: skip
    write_curve(outputs["curve"], curve)
    latency = cpu_latency_ms(net, int(space_cfg.get("image_size", 32)), int(cfg["latency_batches"]))

    metrics = {
        "test_acc": round(test_acc, 4),
        "val_acc": curve[-1]["val_acc"] if curve else round(evaluate(net, val)[0], 4),
        "params": n_params,
        "flops": flops,
        "supernet_acc": best.get("supernet_acc"),
        "arch": best["arch"],
    }
    write_json(outputs["metrics"], metrics)
    write_json(outputs["timing"], {"latency_ms": round(latency, 4), "train_seconds": round(train_seconds, 3)})
    tracker.log_metrics({"test_acc": test_acc, "latency_ms": latency, "train_seconds": train_seconds})
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
    """Median wall time (ms) of single-image forwards on CPU after a warm-up (allocator, caches)."""
    model = copy.deepcopy(net).cpu().eval()
    x = torch.zeros(1, 3, image_size, image_size)
    for _ in range(LATENCY_WARMUP):
        model(x)
    times = []
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - t)
    return 1000.0 * statistics.median(times)


def write_curve(path: str | Path, rows: list[dict]) -> None:
    """curve.csv (epoch, train_loss, train_acc, val_acc), written atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CURVE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())
