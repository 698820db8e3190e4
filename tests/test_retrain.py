"""retrain on tiny data: outputs follow the contract, the model rebuilds, runs repeat byte for byte."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import torch

from nasstudy.spaces.mobile import build_net, count_params
from nasstudy.stages import retrain
from nasstudy.tracking import MemoryTracker
from nasstudy.utils import write_json

# Not conftest's `tiny_mobile` on purpose: 12 channels and the dilated mb3_e2_d2 in the pool, the space
# this test's numbers were written for.
SPACE = {
    "name": "mobile",
    "stem_channels": 8,
    "stages": [{"channels": 8, "positions": 1, "stride": 1}, {"channels": 12, "positions": 2, "stride": 2}],
    "head_channels": 16,
    "pool": ["mb3_e3", "mb5_e1", "mb3_e2_d2"],
    "k": 2,
    "image_size": 16,
    "num_classes": 3,
}
OPS = [["mb3_e3"], [], ["mb3_e3", "mb5_e1"]]
RETRAIN = {"epochs": 1, "batch_size": 16, "lr": 0.05, "momentum": 0.9, "weight_decay": 4.0e-5, "latency_batches": 3}


def _write_cls(path: Path, n: int, seed: int) -> None:
    """Noise images whose dominant colour is the label: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    images = rng.integers(0, 120, (n, 16, 16, 3))
    images[np.arange(n), :, :, labels] += 120
    np.savez(path, images=images.astype(np.uint8), labels=labels.astype(np.int64))


def _run(tmp: Path) -> tuple[dict[str, Path], MemoryTracker]:
    tmp.mkdir()
    for name, n, seed in (("train", 48, 0), ("val", 20, 1), ("test", 20, 2)):
        _write_cls(tmp / f"{name}.npz", n, seed)
    write_json(tmp / "best.json", {"arch": "mb3_e3|skip|mb3_e3+mb5_e1", "ops": OPS, "supernet_acc": 40.0})
    inputs = {
        "cls_train": tmp / "train.npz",
        "cls_val": tmp / "val.npz",
        "cls_test": tmp / "test.npz",
        "best": tmp / "best.json",
    }
    outputs = {k: tmp / f"{k}.{ext}" for k, ext in (("model", "pt"), ("metrics", "json"), ("timing", "json"))}
    outputs["curve"] = tmp / "curve.csv"
    params = {"seed": 0, "study": "t", "device": "cpu", "threads": 1, "space": SPACE, "retrain": RETRAIN}
    tracker = MemoryTracker()
    retrain.run(inputs, outputs, params, {"space": "initial", "method": "random"}, tracker)
    return outputs, tracker


def test_retrain_outputs_and_determinism(tmp_path: Path) -> None:
    out, tracker = _run(tmp_path / "a")
    out2, _ = _run(tmp_path / "b")
    assert out["metrics"].read_bytes() == out2["metrics"].read_bytes()

    metrics = json.loads(out["metrics"].read_text())
    assert set(metrics) == {"test_acc", "val_acc", "params", "flops", "supernet_acc", "arch"}
    assert 0 <= metrics["test_acc"] <= 100 and 0 <= metrics["val_acc"] <= 100
    assert metrics["arch"] == "mb3_e3|skip|mb3_e3+mb5_e1" and metrics["supernet_acc"] == 40.0
    timing = json.loads(out["timing"].read_text())
    assert set(timing) == {"latency_ms", "train_seconds"} and timing["latency_ms"] > 0

    with open(out["curve"]) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "train_loss", "train_acc", "val_acc"] and len(rows) == 1
    assert [s for k, _, s in tracker.metrics if k == "val_acc"] == [1]

    ckpt = torch.load(out["model"], weights_only=True)
    assert set(ckpt) == {"space_cfg", "ops", "num_classes", "state_dict"}
    net = build_net(ckpt["space_cfg"], ckpt["ops"], ckpt["num_classes"])
    net.load_state_dict(ckpt["state_dict"])
    assert metrics["params"] == count_params(net)
    assert net.eval()(torch.zeros(2, 3, 16, 16)).shape == (2, 3)


def test_arch_cost_matches_the_built_net() -> None:
    flops, n_params = retrain.arch_cost(SPACE, [tuple(o) for o in OPS])
    assert n_params == count_params(build_net(SPACE, OPS, 3))
    assert flops > 0


class _Waits(torch.nn.Module):
    """A forward that mostly waits (as a job does when another process holds the core) and computes a little."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.0005)
        return x * 2


def test_cpu_latency_counts_compute_not_waiting() -> None:
    """Latency is the forward's CPU time on one thread: time spent off the core (here asleep; in a study,
    waiting while another job runs) does not count. Wall-clock timing gave >= 0.5 ms here."""
    ms = retrain.cpu_latency_ms(_Waits(), 8, 1)
    assert 0 < ms < 0.25
