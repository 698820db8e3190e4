"""transfer on tiny scenes: every detector and head runs, metrics follow the contract and repeat."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nasstudy.spaces.mobile import build_net
from nasstudy.stages import transfer
from nasstudy.tracking import MemoryTracker
from nasstudy.training import save_checkpoint
from nasstudy.transfer.backbone import FPNBackbone, load_retrained
from nasstudy.transfer.detection import evaluate_detector, scene_targets
from nasstudy.transfer.segmentation import evaluate_segmenter

SPACE = {
    "name": "mobile",
    "stem_channels": 8,
    "stages": [
        {"channels": 8, "positions": 1, "stride": 1},
        {"channels": 8, "positions": 1, "stride": 2},
        {"channels": 16, "positions": 1, "stride": 2},
        {"channels": 16, "positions": 1, "stride": 2},
    ],
    "head_channels": 16,
    "pool": ["mb3_e1", "mb3_e3"],
    "k": 2,
    "image_size": 16,
    "num_classes": 3,
}
OPS = [["mb3_e1"], ["mb3_e3"], [], ["mb3_e1", "mb3_e3"]]
SIZE = 32
DETECTION = {"epochs": 1, "batch_size": 4, "lr": 0.01, "min_size": SIZE, "max_size": SIZE}
SEGMENTATION = {"epochs": 1, "batch_size": 4, "lr": 0.01}


def _write_scenes(path: Path, n: int, seed: int) -> None:
    """Rectangles of classes 1..3 on noise, with their masks and boxes; image 0 has no object."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 100, (n, SIZE, SIZE, 3)).astype(np.uint8)
    masks = np.zeros((n, SIZE, SIZE), np.uint8)
    boxes, labels, owner = [], [], []
    for i in range(1, n):
        for _ in range(int(rng.integers(1, 3))):
            w, h = rng.integers(6, 15, 2)
            x0, y0 = rng.integers(0, SIZE - w), rng.integers(0, SIZE - h)
            c = int(rng.integers(1, 4))
            images[i, y0 : y0 + h, x0 : x0 + w, c - 1] = 250
            masks[i, y0 : y0 + h, x0 : x0 + w] = c
            boxes.append([x0, y0, x0 + w, y0 + h])
            labels.append(c)
            owner.append(i)
    np.savez(
        path,
        images=images,
        masks=masks,
        boxes=np.array(boxes, np.float32).reshape(-1, 4),
        box_labels=np.array(labels, np.int64),
        box_image=np.array(owner, np.int64),
    )


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("scenes")
    _write_scenes(tmp / "train.npz", 8, 0)
    _write_scenes(tmp / "val.npz", 4, 1)
    torch.manual_seed(0)
    net = build_net(SPACE, OPS, 3)
    ckpt = {"space_cfg": SPACE, "ops": OPS, "num_classes": 3, "state_dict": net.state_dict()}
    save_checkpoint(ckpt, tmp / "model.pt")
    return {"scenes_train": tmp / "train.npz", "scenes_val": tmp / "val.npz", "model": tmp / "model.pt"}


def _run(inputs: dict[str, Path], out: Path, task: str, option: str) -> tuple[dict, MemoryTracker]:
    out.mkdir()
    cfg = dict(DETECTION, detector=option) if task == "detection" else dict(SEGMENTATION, head=option)
    params = {"seed": 0, "study": "t", "device": "cpu", "threads": 1, "space": SPACE, "transfer": {task: cfg}}
    outputs = {"metrics": out / "metrics.json", "timing": out / "timing.json"}
    tracker = MemoryTracker()
    transfer.run(inputs, outputs, params, {"task": task, "space": "initial", "method": "rea"}, tracker)
    timing = json.loads(outputs["timing"].read_text())
    assert set(timing) == {"train_seconds", "eval_seconds"}
    return json.loads(outputs["metrics"].read_text()), tracker


@pytest.mark.parametrize(
    "task, option, keys",
    [
        ("detection", "fcos", {"map", "map_50", "map_75"}),
        ("detection", "retinanet", {"map", "map_50", "map_75"}),
        ("segmentation", "fcn", {"miou", "pixel_acc"}),
        ("segmentation", "deeplabv3", {"miou", "pixel_acc"}),
        ("segmentation", "lraspp", {"miou", "pixel_acc"}),
    ],
)
def test_transfer_options(inputs: dict[str, Path], tmp_path: Path, task: str, option: str, keys: set) -> None:
    metrics, tracker = _run(inputs, tmp_path / "a", task, option)
    assert set(metrics) == keys
    assert all(0.0 <= v <= 100.0 for v in metrics.values())
    assert [s for k, _, s in tracker.metrics if k == "train_loss"] == [1]


@pytest.mark.parametrize("task, option", [("detection", "fcos"), ("segmentation", "fcn")])
def test_transfer_repeats(inputs: dict[str, Path], tmp_path: Path, task: str, option: str) -> None:
    _run(inputs, tmp_path / "a", task, option)
    _run(inputs, tmp_path / "b", task, option)
    assert (tmp_path / "a/metrics.json").read_bytes() == (tmp_path / "b/metrics.json").read_bytes()


def test_unknown_task_and_options(inputs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="task"):
        _run(inputs, tmp_path / "a", "classification", "fcn")
    with pytest.raises(ValueError, match="detector"):
        _run(inputs, tmp_path / "b", "detection", "yolo")
    with pytest.raises(ValueError, match="head"):
        _run(inputs, tmp_path / "c", "segmentation", "unet")


def test_backbone_uses_retrained_weights_and_freezes_early_stages(inputs: dict[str, Path]) -> None:
    net, ckpt = load_retrained(inputs["model"])
    assert all(torch.equal(v, ckpt["state_dict"][k]) for k, v in net.state_dict().items())
    backbone = FPNBackbone(net, 32, min_stride=4)
    assert backbone.strides == [4, 8] and backbone.out_channels == 32
    levels = backbone(torch.zeros(2, 3, SIZE, SIZE))
    assert [tuple(v.shape) for v in levels.values()] == [(2, 32, 8, 8), (2, 32, 4, 4)]
    assert not any(p.requires_grad for p in net.stem.parameters())
    assert all(p.requires_grad for p in net.positions[-1].parameters())
    backbone.train()
    assert not net.stem.training and net.positions[-1].training


class _Oracle(torch.nn.Module):
    """Answers from the ground truth of the scenes it is built on: the metrics must be perfect."""

    def __init__(self, data: dict[str, np.ndarray], task: str) -> None:
        super().__init__()
        self.data, self.task, self.seen = data, task, 0

    def forward(self, x):
        n = len(x)
        idx = np.arange(self.seen, self.seen + n)
        self.seen += n
        if self.task == "segmentation":
            masks = torch.from_numpy(self.data["masks"][idx].astype(np.int64))
            return torch.nn.functional.one_hot(masks, 4).permute(0, 3, 1, 2).float()
        targets = scene_targets(self.data, idx)
        return [dict(t, scores=torch.ones(len(t["labels"]))) for t in targets]


def test_metrics_are_perfect_for_the_ground_truth(inputs: dict[str, Path]) -> None:
    val = transfer.load_scenes(inputs["scenes_val"])
    cpu = torch.device("cpu")
    det = evaluate_detector(_Oracle(val, "detection"), val, 3, cpu)
    assert det == {"map": 100.0, "map_50": 100.0, "map_75": 100.0}
    zero, one = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    seg = evaluate_segmenter(_Oracle(val, "segmentation"), val, 4, 3, cpu, zero, one)
    assert seg == {"miou": 100.0, "pixel_acc": 100.0}
