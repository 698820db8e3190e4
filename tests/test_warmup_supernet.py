"""warmup_supernet on tiny data: outputs exist and parse, runs repeat byte for byte; training is seeded."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch

from nasstudy.spaces.mobile import Supernet, build_net, initial_state
from nasstudy.stages import warmup_supernet
from nasstudy.tracking import MemoryTracker
from nasstudy.training import (
    ClsData,
    augment_batch,
    load_model_file,
    make_generator,
    sgd,
    train_epoch,
)
from nasstudy.utils import write_json

# Not conftest's `tiny_mobile` on purpose: k = 3 of a 4-op pool (with the dilated mb3_e2_d2, which
# _train_once uses), 12 channels.
SPACE = {
    "name": "mobile",
    "stem_channels": 8,
    "stages": [{"channels": 8, "positions": 1, "stride": 1}, {"channels": 12, "positions": 2, "stride": 2}],
    "head_channels": 16,
    "pool": ["mb3_e3", "mb5_e1", "mb3_e2_d2", "mb5_e3"],
    "k": 3,
    "image_size": 16,
    "num_classes": 3,
}
SUPERNET = {
    "epochs": 2,
    "batch_size": 16,
    "lr": 0.05,
    "momentum": 0.9,
    "weight_decay": 4.0e-5,
    "bn_recal_batches": 1,
    "random_archs": 6,
}


def _write_data(path: Path, n: int, seed: int) -> None:
    """Noise images whose mean colour depends on the label: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    images = rng.integers(0, 120, (n, 16, 16, 3))
    images[np.arange(n), :, :, labels] += 120
    np.savez(path, images=images.astype(np.uint8), labels=labels.astype(np.int64))


def _run(tmp: Path) -> tuple[dict[str, Path], MemoryTracker]:
    tmp.mkdir()
    _write_data(tmp / "train.npz", 64, 0)
    _write_data(tmp / "val.npz", 32, 1)
    write_json(tmp / "state.json", initial_state(SPACE))
    inputs = {"cls_train": tmp / "train.npz", "cls_val": tmp / "val.npz", "space_state": tmp / "state.json"}
    outputs = {"supernet": tmp / "supernet.pt", "metrics": tmp / "metrics.json", "random_archs": tmp / "r.csv"}
    params = {"seed": 0, "study": "t", "device": "cpu", "threads": 1, "space": SPACE, "supernet": SUPERNET}
    tracker = MemoryTracker()
    warmup_supernet.run(inputs, outputs, params, {"space": "initial"}, tracker)
    return outputs, tracker


def test_warmup_outputs_and_determinism(tmp_path: Path) -> None:
    out1, tracker = _run(tmp_path / "a")
    out2, _ = _run(tmp_path / "b")
    metrics = json.loads(out1["metrics"].read_text())
    assert len(metrics["train_loss"]) == len(metrics["train_acc"]) == 2
    assert metrics["random_acc_min"] <= metrics["random_acc_mean"] <= metrics["random_acc_max"]
    assert not any("second" in k or "time" in k for k in metrics)
    with open(out1["random_archs"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and list(rows[0]) == ["arch", "flops", "params", "acc", "loss"]
    assert [s for k, _, s in tracker.metrics if k == "train_loss"] == [0, 1]
    assert tracker.last("train_seconds") > 0
    ckpt = load_model_file(out1["supernet"])
    Supernet.from_model_file(ckpt)
    assert out1["metrics"].read_bytes() == out2["metrics"].read_bytes()
    assert out1["random_archs"].read_bytes() == out2["random_archs"].read_bytes()


def _train_once(data: ClsData) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    net = build_net(SPACE, [("mb3_e3",), (), ("mb5_e1", "mb3_e2_d2")], 3)
    opt = sgd(net, 0.05, 0.9, 1e-4)
    train_epoch(net, opt, data, 16, make_generator(0, "test"), augment=True)
    return net.state_dict()


def test_training_is_deterministic() -> None:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    data = ClsData(torch.randn(48, 3, 16, 16, generator=g), torch.randint(0, 3, (48,), generator=g))
    a, b = _train_once(data), _train_once(data)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_augment_batch_crops_and_flips() -> None:
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    out = augment_batch(x, torch.Generator().manual_seed(0), pad=0)
    for i in range(2):
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1))
    padded = augment_batch(x, torch.Generator().manual_seed(1), pad=2)
    assert padded.shape == x.shape
