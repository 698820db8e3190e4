"""transfer on tiny scenes: every detector and head runs, metrics (per class too) follow the contract
and repeat, examples.png is drawn and repeats byte for byte, the classes come from the scenes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nasstudy.spaces.mobile import build_net
from nasstudy.stages import transfer
from nasstudy.tracking import MemoryTracker
from nasstudy.training import save_model_file
from nasstudy.transfer import detection
from nasstudy.transfer.backbone import FPNBackbone, load_retrained
from nasstudy.transfer.detection import evaluate_detector, scene_targets
from nasstudy.transfer.segmentation import evaluate_segmenter

# Not conftest's `tiny_mobile` on purpose: four stages (strides 1, 2, 2, 2), so the backbone has
# feature maps at strides 4 and 8 for the detectors' FPN.
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
# min_instances 1: the tiny val split has only a few boxes per class
DETECTION = {"epochs": 1, "batch_size": 4, "lr": 0.01, "min_size": SIZE, "max_size": SIZE, "min_instances": 1}
NAMES = ["circle", "red square", "tri/angle"]  # label k is NAMES[k - 1]; odd characters for MLflow names
SEGMENTATION = {"epochs": 1, "batch_size": 4, "lr": 0.01}


def _write_scenes(path: Path, n: int, seed: int, names: list[str] | None = None) -> None:
    """Rectangles of classes 1..3 on noise, with their masks and boxes; image 0 has no object.
    With `names`, the file also holds `class_names` (a numpy unicode array, as prepare_data writes)."""
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
        **({} if names is None else {"class_names": np.asarray(names, dtype=str)}),
    )


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("scenes")
    _write_scenes(tmp / "train.npz", 8, 0)
    _write_scenes(tmp / "val.npz", 4, 1)
    torch.manual_seed(0)
    net = build_net(SPACE, OPS, 3)
    ckpt = {"space_cfg": SPACE, "ops": OPS, "num_classes": 3, "state_dict": net.state_dict()}
    save_model_file(ckpt, tmp / "model.pt")
    return {"scenes_train": tmp / "train.npz", "scenes_val": tmp / "val.npz", "model": tmp / "model.pt"}


@pytest.fixture(scope="module")
def named_inputs(inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same scenes with `class_names` in both npz files."""
    tmp = tmp_path_factory.mktemp("named")
    _write_scenes(tmp / "train.npz", 8, 0, NAMES)
    _write_scenes(tmp / "val.npz", 4, 1, NAMES)
    return dict(inputs, scenes_train=tmp / "train.npz", scenes_val=tmp / "val.npz")


def _run(inputs: dict[str, Path], out: Path, task: str, option: str, space: dict = SPACE) -> tuple[dict, MemoryTracker]:
    out.mkdir()
    cfg = dict(DETECTION, detector=option) if task == "detection" else dict(SEGMENTATION, head=option)
    params = {"seed": 0, "study": "t", "device": "cpu", "threads": 1, "space": space, "transfer": {task: cfg}}
    outputs = {"metrics": out / "metrics.json", "timing": out / "timing.json", "examples": out / "examples.png"}
    tracker = MemoryTracker()
    transfer.run(inputs, outputs, params, {"task": task, "space": "initial", "method": "rea"}, tracker)
    timing = json.loads(outputs["timing"].read_text())
    assert set(timing) == {"train_seconds", "eval_seconds"}
    assert outputs["examples"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert tracker.artifacts == [outputs["examples"]]
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
    per_class = metrics.pop("per_class")
    assert set(metrics) == keys
    assert all(0.0 <= v <= 100.0 for v in [*metrics.values(), *per_class.values()])
    assert [s for k, _, s in tracker.metrics if k == "train_loss"] == [1]
    # no class_names in these scenes: space.num_classes (3) classes named class_1..class_3
    names = {"class_1", "class_2", "class_3"} | ({"background"} if task == "segmentation" else set())
    assert per_class and set(per_class) <= names
    logged = {k for k, _, _ in tracker.metrics}
    assert "per_class" not in logged and keys <= logged
    prefix = "ap" if task == "detection" else "iou"
    assert {k for k in logged if k.startswith(prefix + ".")} == {f"{prefix}.{c}" for c in per_class}


@pytest.mark.parametrize("task, option", [("detection", "fcos"), ("segmentation", "fcn")])
def test_transfer_repeats(inputs: dict[str, Path], tmp_path: Path, task: str, option: str) -> None:
    _run(inputs, tmp_path / "a", task, option)
    _run(inputs, tmp_path / "b", task, option)
    for name in ("metrics.json", "examples.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_classes_come_from_the_scenes(
    named_inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """3 class_names in the npz beat space.num_classes = 5: a detector over 4 labels (0 unused), a
    segmenter over background + 3, per_class keyed by the names, MLflow names sanitised."""
    assert transfer.load_scenes(named_inputs["scenes_val"])["class_names"].tolist() == NAMES
    built = []
    build = detection.build_detector
    monkeypatch.setattr(detection, "build_detector", lambda net, c, *a: built.append(c) or build(net, c, *a))
    space = dict(SPACE, num_classes=5)
    det, tracker = _run(named_inputs, tmp_path / "det", "detection", "fcos", space)
    assert built == [3] and tracker.params["scene_classes"] == 3
    assert det["per_class"] and set(det["per_class"]) <= set(NAMES)
    assert {k for k, _, _ in tracker.metrics if k.startswith("ap.")} <= {"ap.circle", "ap.red_square", "ap.tri_angle"}
    seg, tracker = _run(named_inputs, tmp_path / "seg", "segmentation", "fcn", space)
    assert set(seg["per_class"]) == {"background", "circle", "red square"}  # the val masks lack class 3
    assert tracker.last("iou.red_square") == seg["per_class"]["red square"]


def test_class_names_and_mlflow_names() -> None:
    named, plain = {"class_names": np.asarray(NAMES)}, {}
    assert transfer.scene_class_names(named, named, 5) == NAMES
    assert transfer.scene_class_names(plain, named, 5) == NAMES
    assert transfer.scene_class_names(plain, plain, 2) == ["class_1", "class_2"]
    with pytest.raises(ValueError, match="different class_names"):
        transfer.scene_class_names(named, {"class_names": np.asarray(NAMES[:2])}, 5)
    assert transfer.mlflow_names("ap", {"a b": 1, "a/b": 2.5, "ok-1.x": 3}) == {
        "ap.a_b": 1.0,
        "ap.a_b_2": 2.5,
        "ap.ok-1.x": 3.0,
    }


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
    counts = np.bincount(val["box_labels"], minlength=4)[1:]
    det = evaluate_detector(_Oracle(val, "detection"), val, 3, cpu, NAMES, min_instances=2)
    # per_class: only the categories with at least min_instances val boxes
    per_class = {n: 100.0 for n, c in zip(NAMES, counts) if c >= 2}
    assert 0 < len(per_class) < 3, counts  # the threshold leaves out some class of these scenes
    assert det == {"map": 100.0, "map_50": 100.0, "map_75": 100.0, "per_class": per_class}
    zero, one = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    seg = evaluate_segmenter(_Oracle(val, "segmentation"), val, 4, 3, cpu, zero, one)
    per_class = {"background": 100.0} | {f"class_{k}": 100.0 for k in range(1, 4) if counts[k - 1]}
    assert seg == {"miou": 100.0, "pixel_acc": 100.0, "per_class": per_class}


def test_cpu_bincount_restores_the_deterministic_flag_and_changes_no_count():
    from torchmetrics.classification import MulticlassJaccardIndex

    from nasstudy.transfer.segmentation import cpu_bincount
    from nasstudy.utils import set_deterministic

    pred, y = torch.randint(0, 5, (2, 16, 16)), torch.randint(0, 5, (2, 16, 16))
    set_deterministic(True)
    try:
        slow = MulticlassJaccardIndex(5, average="none")
        slow.update(pred, y)  # the deterministic mesh path
        fast = MulticlassJaccardIndex(5, average="none")
        with cpu_bincount():
            assert not torch.are_deterministic_algorithms_enabled()
            fast.update(pred, y)
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.equal(slow.compute(), fast.compute())
    finally:
        set_deterministic(False)
