"""warmup_supernet: train a space's supernet by uniform path sampling, then score random archs.

Every space gets the same budget here, so that searches in different spaces start from equally
trained shared weights; the random-arch scores show how much archs of the space differ.
"""

from __future__ import annotations

import csv
import io
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from nasstudy.checkpoint import NO_CHECKPOINT, Checkpoint, capture, restore
from nasstudy.spaces import make_space
from nasstudy.spaces.mobile import Supernet
from nasstudy.tracking import Tracker, log_epoch
from nasstudy.training import (
    MixedPrecision,
    load_cls,
    make_generator,
    resolve_device,
    save_model_file,
    score_arch,
    sgd_cosine,
    train_epoch,
)
from nasstudy.utils import atomic_write_bytes, make_rng, read_json, seed_torch, write_json

STAGE = "warmup_supernet"
RANDOM_ARCHS = 50
SCORE_CHECKPOINT_EVERY = 10  # random archs scored between two checkpoints


def run(
    inputs: dict[str, Path],
    outputs: dict[str, Path],
    params: dict,
    wildcards: dict[str, str],
    tracker: Tracker,
    checkpoint: Checkpoint = NO_CHECKPOINT,
) -> None:
    """Inputs cls_train, cls_val, space_state; outputs supernet, metrics, random_archs. Checkpoints
    after every epoch and every few scored archs; a rerun after a crash continues from the last."""
    names = [STAGE, *wildcards.values()]
    seed, cfg, space_cfg = int(params["seed"]), params["supernet"], params["space"]
    seed_torch(seed, *names, threads=int(params["threads"]))
    device = resolve_device(params["device"])
    precision = MixedPrecision(device, bool(params.get("amp", False)))
    channels_last = bool(cfg.get("channels_last", True))

    space = make_space(space_cfg, read_json(inputs["space_state"]))
    train = load_cls(inputs["cls_train"], device, channels_last)
    val = load_cls(inputs["cls_val"], device, channels_last)
    supernet = Supernet(space_cfg, space.active).to(device)
    if channels_last:
        supernet = supernet.to(memory_format=torch.channels_last)

    # Weights: a fresh uniformly sampled arch every step (after the optional full-path epochs).
    epochs, batch_size = int(cfg["epochs"]), int(cfg["batch_size"])
    optimizer, scheduler = sgd_cosine(supernet, cfg, epochs * max(1, len(train) // batch_size))
    arch_rng = make_rng(seed, *names, "paths")
    batch_gen = make_generator(seed, *names, "batches")
    # Optional: the first `full_path_epochs` train every branch at once (all on), which on small
    # budgets gives the shared weights a common start that random paths then specialise.
    full_epochs = int(cfg.get("full_path_epochs", 0))
    full = space.ops((1,) * len(space.decision_sizes))

    def sample_ops() -> list[tuple[str, ...]]:
        return space.ops(space.sample(arch_rng))

    history: dict[str, list[float]] = {"train_loss": [], "train_acc": []}
    sample_rng = make_rng(seed, *names, "random_archs")
    rows: list[dict] = []
    first_epoch, trained = 0, None
    parts = dict(supernet=supernet, optimizer=optimizer, scheduler=scheduler, batch_gen=batch_gen,
                 precision=precision, arch_rng=arch_rng, sample_rng=sample_rng)  # fmt: skip
    saved = checkpoint.load()
    if saved is not None:
        restore(saved, **parts)
        first_epoch, history, rows, trained = saved["epoch"], saved["history"], saved["rows"], saved["trained"]
        for epoch in range(first_epoch):
            tracker.log_metrics({k: v[epoch] for k, v in history.items()}, step=epoch)

    def save_state(label: str) -> None:
        progress = {"epoch": epoch_done, "history": history, "rows": rows, "trained": trained}
        checkpoint.save({**capture(**parts), **progress}, label)

    epoch_done = first_epoch
    start = time.perf_counter()
    for epoch in range(first_epoch, epochs):
        loss, acc = train_epoch(
            supernet,
            optimizer,
            train,
            batch_size,
            batch_gen,
            scheduler,
            pick_ops=sample_ops if epoch >= full_epochs else (lambda: full),
            augment=bool(cfg.get("augment", False)),
            desc=f"warmup epoch {epoch + 1}/{epochs}",
            precision=precision,
        )
        history["train_loss"].append(round(loss, 6))
        history["train_acc"].append(round(acc, 4))
        log_epoch(tracker, "warmup", epoch + 1, epochs, {"train_loss": loss, "train_acc": acc}, step=epoch)
        epoch_done = epoch + 1
        if epoch_done == epochs:  # the trained weights, before BN recalibration changes their statistics
            trained = {k: v.clone() for k, v in supernet.state_dict().items()}
        save_state(f"epoch {epoch_done}/{epochs}")
    train_seconds = time.perf_counter() - start
    supernet.load_state_dict(trained)
    save_model_file(supernet.to_model_file(), outputs["supernet"])

    # Scores of random archs with inherited weights (after BN recalibration).
    start = time.perf_counter()
    count = int(cfg.get("random_archs", RANDOM_ARCHS))
    recal = int(cfg["bn_recal_batches"])
    for _ in tqdm(range(len(rows), count), desc="random archs", file=sys.stderr, mininterval=5):
        if rows and len(rows) % SCORE_CHECKPOINT_EVERY == 0:
            save_state(f"{len(rows)}/{count} random archs scored")
        arch = space.sample(sample_rng)
        acc, loss = score_arch(supernet, space.ops(arch), train, val, recal, batch_size)
        rows.append(
            {
                "arch": space.to_string(arch),
                "flops": space.flops(arch),
                "params": space.params(arch),
                "acc": round(acc, 4),
                "loss": round(loss, 6),
            }
        )
    score_seconds = time.perf_counter() - start
    write_csv(outputs["random_archs"], rows, ["arch", "flops", "params", "acc", "loss"])

    accs = np.array([r["acc"] for r in rows], dtype=np.float64)
    metrics = {
        "epochs": epochs,
        **history,
        "num_random_archs": count,
        "random_acc_mean": round(float(accs.mean()), 4),
        "random_acc_std": round(float(accs.std()), 4),
        "random_acc_min": float(accs.min()),
        "random_acc_max": float(accs.max()),
        "num_decisions": len(space.decision_sizes),
    }
    write_json(outputs["metrics"], metrics)
    tracker.log_metrics({k: v for k, v in metrics.items() if k.startswith("random_acc")})
    tracker.log_metrics({"train_seconds": train_seconds, "score_seconds": score_seconds})
    tracker.log_artifact(outputs["random_archs"])


def write_csv(path: str | Path, rows: list[dict], columns: list[str]) -> None:
    """A CSV with a header, written atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())
