"""prepare_data writes every output per the contract, byte-identical across runs."""

from pathlib import Path

import numpy as np
import pytest

from nasstudy.data.classification import DataError
from nasstudy.stages import prepare_data
from nasstudy.tracking import MemoryTracker
from nasstudy.utils import read_json

PARAMS = {
    "seed": 0,
    "study": "test",
    "device": "cpu",
    "threads": 1,
    "data": {
        "source": "synthetic",
        "num_classes": 4,
        "image_size": 16,
        "train": 24,
        "val": 8,
        "test": 8,
        "scene_size": 32,
        "scene_train": 4,
        "scene_val": 2,
        "max_objects": 3,
        "scene_source": "synthetic",
    },
}
FILES = {
    "cls_train": "cls_train.npz",
    "cls_val": "cls_val.npz",
    "cls_test": "cls_test.npz",
    "scenes_train": "scenes_train.npz",
    "scenes_val": "scenes_val.npz",
    "summary": "summary.json",
    "preview": "preview.png",
}


def _run(folder: Path, params: dict = PARAMS) -> tuple[dict[str, Path], MemoryTracker]:
    outputs = {k: folder / "data" / v for k, v in FILES.items()}
    tracker = MemoryTracker()
    prepare_data.run({}, outputs, params, {}, tracker)
    return outputs, tracker


def test_outputs_follow_contract(tmp_path):
    outputs, tracker = _run(tmp_path)
    assert all(p.is_file() for p in outputs.values())
    for key, n in [("cls_train", 24), ("cls_val", 8), ("cls_test", 8)]:
        with np.load(outputs[key]) as z:
            assert sorted(z.files) == ["images", "labels"]
            assert z["images"].shape == (n, 16, 16, 3) and z["images"].dtype == np.uint8
            assert z["labels"].dtype == np.int64 and z["labels"].max() < 4
    for key, n in [("scenes_train", 4), ("scenes_val", 2)]:
        with np.load(outputs[key]) as z:
            assert sorted(z.files) == ["box_image", "box_labels", "boxes", "class_names", "images", "masks"]
            assert list(z["class_names"]) == ["circle", "square", "triangle", "cross"]
            assert z["images"].shape == (n, 32, 32, 3) and z["masks"].shape == (n, 32, 32)
            assert z["boxes"].dtype == np.float32 and z["box_labels"].min() >= 1
    summary = read_json(outputs["summary"])
    assert summary["class_names"] == ["circle", "square", "triangle", "cross"]
    assert summary["splits"]["cls_train"]["count"] == 24
    assert sum(summary["splits"]["cls_train"]["per_class"].values()) == 24
    assert outputs["preview"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert tracker.last("cls_train_count") == 24
    assert outputs["preview"] in tracker.artifacts
    assert not list((tmp_path / "data").glob(".*.tmp"))


def test_two_runs_byte_identical(tmp_path):
    a, _ = _run(tmp_path / "a")
    b, _ = _run(tmp_path / "b")
    for key in FILES:
        assert a[key].read_bytes() == b[key].read_bytes(), key


def test_splits_differ(tmp_path):
    outputs, _ = _run(tmp_path)
    with np.load(outputs["cls_val"]) as v, np.load(outputs["cls_test"]) as t:
        assert not np.array_equal(v["images"], t["images"])


def test_unknown_source_raises(tmp_path):
    params = {**PARAMS, "data": {**PARAMS["data"], "source": "imagenet"}}
    with pytest.raises(ValueError, match="imagenet"):
        _run(tmp_path, params)


CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


@pytest.mark.skipif(not (CIFAR / "train.npz").is_file(), reason="real CIFAR-10 subset not present")
def test_npz_source_reads_real_cifar10_and_draws_val_from_train(tmp_path: Path) -> None:
    params = {**PARAMS, "data": {**PARAMS["data"], "source": "npz", "root": str(CIFAR), "num_classes": 10,
                                 "image_size": 32, "train": 300, "val": 100, "test": 50}}  # fmt: skip
    outputs = {k: tmp_path / v for k, v in FILES.items()}
    prepare_data.run({}, outputs, params, {}, MemoryTracker())
    with np.load(CIFAR / "train.npz") as f:
        real = f["images"]
    with np.load(outputs["cls_train"]) as tr, np.load(outputs["cls_val"]) as va, np.load(outputs["cls_test"]) as te:
        assert tr["images"].shape == (300, 32, 32, 3) and va["images"].shape == (100, 32, 32, 3)
        assert te["images"].shape == (50, 32, 32, 3)
        # val images are real training images, disjoint from the train split
        flat = {img.tobytes() for img in real}
        assert all(img.tobytes() in flat for img in va["images"])
        assert not {i.tobytes() for i in tr["images"]} & {i.tobytes() for i in va["images"]}
    summary = read_json(outputs["summary"])
    assert summary["num_classes"] == 10 and len(summary["scene_class_names"]) == 8


def test_npz_source_names_the_missing_file(tmp_path: Path) -> None:
    params = {**PARAMS, "data": {**PARAMS["data"], "source": "npz", "root": str(tmp_path)}}
    outputs = {k: tmp_path / "out" / v for k, v in FILES.items()}
    with pytest.raises(DataError, match=f"{tmp_path}/train.npz"):
        prepare_data.run({}, outputs, params, {}, MemoryTracker())
    assert not (tmp_path / "out").exists()


COCO = CIFAR.parent / "detseg" / "tiny_coco"
COCO_DATA = {"scene_source": "coco", "scene_root": str(COCO), "scene_size": 64, "scene_val": 10,
             "scene_train_split": "train2017", "scene_val_split": "val2017"}  # fmt: skip


@pytest.mark.skipif(not COCO.is_dir(), reason="tiny_coco not present")
def test_coco_scenes_keep_their_categories(tmp_path: Path) -> None:
    """Real COCO scenes: a seeded subset, resized and padded, with COCO's 80 category names in the npz."""
    data = {**PARAMS["data"], **COCO_DATA, "scene_train": 20}
    outputs, _ = _run(tmp_path, {**PARAMS, "data": data})
    with np.load(outputs["scenes_train"]) as z:
        assert z["images"].shape == (20, 64, 64, 3) and len(z["class_names"]) == 80
        assert z["class_names"][0] == "person" and z["box_image"].max() < 20
        assert 1 <= z["box_labels"].min() and z["box_labels"].max() <= 80 and len(z["boxes"]) > 20
        assert (z["masks"] > 0).any()
    summary = read_json(outputs["summary"])
    assert summary["scene_source"] == "coco" and summary["splits"]["scenes_val"]["count"] == 10
    again, _ = _run(tmp_path / "again", {**PARAMS, "data": data})
    assert again["scenes_val"].read_bytes() == outputs["scenes_val"].read_bytes()


@pytest.mark.skipif(not COCO.is_dir(), reason="tiny_coco not present")
def test_asking_for_more_scenes_than_the_split_has_is_an_error(tmp_path: Path) -> None:
    data = {**PARAMS["data"], **COCO_DATA, "scene_train": 51}
    with pytest.raises(DataError, match=r"train2017.*data.scene_train = 51, it has 50"):
        _run(tmp_path, {**PARAMS, "data": data})
    assert not (tmp_path / "data").exists()


def test_cifar10_pickle_folder_and_voc_scenes(tmp_path: Path) -> None:
    """data.source cifar10 (the official pickle layout) and scene_source voc, through the stage."""
    from test_data_classification import write_cifar10
    from test_data_detseg import _mini_voc

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(120, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(120) % 10
    write_cifar10(tmp_path / "cifar" / "cifar-10-batches-py", images, labels, n_test=20)
    _mini_voc(tmp_path / "voc")
    data = {**PARAMS["data"], "source": "cifar10", "root": str(tmp_path / "cifar"), "num_classes": 10,
            "image_size": 32, "train": 60, "val": 20, "test": 20, "scene_source": "voc",
            "scene_root": str(tmp_path / "voc"), "scene_train_split": "train", "scene_val_split": "train",
            "scene_size": 64, "scene_train": 2, "scene_val": 1}  # fmt: skip
    outputs, _ = _run(tmp_path / "out", {**PARAMS, "data": data})
    with np.load(outputs["cls_test"]) as te, np.load(outputs["cls_val"]) as va:
        assert te["images"].tobytes() == images[100:].tobytes()  # the whole test batch, in order
        assert sorted(np.bincount(va["labels"], minlength=10)) == [2] * 10  # stratified val from train
    with np.load(outputs["scenes_train"]) as z:
        assert list(z["class_names"]) == ["cat", "dog"] and z["images"].shape == (2, 64, 64, 3)
    assert read_json(outputs["summary"])["class_names"][0] == "airplane"
