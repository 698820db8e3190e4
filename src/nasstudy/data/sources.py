"""Where prepare_data's splits come from: the `data` params pick a source, this returns the arrays.

Classification (`data.source`): `synthetic` (generated shapes), `npz` (root/train.npz + test.npz),
`cifar10` / `cifar100` (the official python-pickle folders), `imagefolder` (root/train/<class>/… and
root/val/<class>/…). The search's train/val split is drawn from the training set only, stratified
and seeded; the test split is a seeded subset of the test set. Scenes (`data.scene_source`):
`synthetic`, `coco` (root/annotations/instances_<split>.json) or `voc`, resized and padded to
`scene_size`, then a seeded subset of `scene_train` / `scene_val` images. Every path comes from
params; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nasstudy.data.classification import (
    DataError,
    load_cifar,
    load_image_folder,
    load_npz,
    train_val_indices,
)
from nasstudy.data.synthetic import CLASS_NAMES, make_classification, make_scenes
from nasstudy.data.synthetic import class_names as shape_names
from nasstudy.utils import make_rng

CLS_SOURCES = ("synthetic", "npz", "cifar10", "cifar100", "imagefolder")
SCENE_SOURCES = ("synthetic", "coco", "voc")
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
STAGE = "prepare_data"

Split = tuple[np.ndarray, np.ndarray]


def scene_classes(num_classes: int) -> int:
    """Synthetic scenes draw as many shape classes as the classification data has, at most all shapes."""
    return min(num_classes, len(CLASS_NAMES))


def classification_splits(data: dict, seed: int) -> tuple[dict[str, Split], list[str]]:
    """({"cls_train", "cls_val", "cls_test"}: (images, labels), class names) for `data.source`."""
    source, c = data["source"], int(data["num_classes"])
    if source not in CLS_SOURCES:
        raise ValueError(f"data.source {source!r} is not supported (allowed: {', '.join(CLS_SOURCES)})")
    if source == "synthetic":
        size = int(data["image_size"])
        splits = {}
        for key, n in (("cls_train", data["train"]), ("cls_val", data["val"]), ("cls_test", data["test"])):
            splits[key] = make_classification(int(n), size, c, make_rng(seed, STAGE, key))
        return splits, shape_names(c)
    (train, test), names = _read_classification(data)
    _check_classes(train[1], names, data)
    for what, (images, labels) in (("training", train), ("test", test)):
        _check_arrays(images, labels, data, f"{data['root']} ({what} set)")
    return _subsets(train, test, data, seed), names or [f"class_{i}" for i in range(c)]


def _read_classification(data: dict) -> tuple[tuple[Split, Split], list[str] | None]:
    root, source = Path(data["root"]), data["source"]
    if source == "npz":
        return (load_npz(root / "train.npz"), load_npz(root / "test.npz")), None
    if source in ("cifar10", "cifar100"):
        names = CIFAR10_CLASSES if source == "cifar10" else None
        return (load_cifar(root, source, train=True), load_cifar(root, source, train=False)), names
    size = int(data["image_size"])
    *train, names = load_image_folder(root / "train", size)
    *test, test_names = load_image_folder(root / "val", size)
    if test_names != names:
        raise DataError(f"{root / 'val'}: classes {test_names} differ from {root / 'train'}'s {names}")
    return (tuple(train), tuple(test)), names


def _check_classes(labels: np.ndarray, names: list[str] | None, data: dict) -> None:
    """The data must hold data.num_classes classes: with fewer (one class folder, say) every model
    scores 100% and the study looks perfect; with more, labels would not fit the classifier."""
    c, root = int(data["num_classes"]), data["root"]
    if names is not None and len(names) != c:
        listed = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise DataError(f"{root}: {len(names)} classes ({listed}) but data.num_classes = {c}; they must match")
    found = len(np.unique(labels))
    if found < c:
        raise DataError(f"{root}: the training set has only {found} of data.num_classes = {c} classes")


def _check_arrays(images: np.ndarray, labels: np.ndarray, data: dict, where: str) -> None:
    size, c = int(data["image_size"]), int(data["num_classes"])
    if images.shape[1:] != (size, size, 3):
        raise DataError(f"{where}: images are {images.shape[1]}x{images.shape[2]}, data.image_size is {size}")
    if len(labels) and int(labels.max()) >= c:
        raise DataError(f"{where}: labels reach {int(labels.max())}, data.num_classes is {c}")


def _subsets(train: Split, test: Split, data: dict, seed: int) -> dict[str, Split]:
    """Val (stratified) and train from the training set, never from the test set; test a subset of test."""
    n_train, n_val, n_test = int(data["train"]), int(data["val"]), int(data["test"])
    if n_train + n_val > len(train[1]) or n_test > len(test[1]):
        raise DataError(
            f"{data['root']}: asked for {n_train}+{n_val} train/val and {n_test} test images, "
            f"it has {len(train[1])} training and {len(test[1])} test images"
        )
    rest, val_idx = train_val_indices(train[1], n_val, make_rng(seed, STAGE, "val_split"))
    train_idx = np.sort(make_rng(seed, STAGE, "train_subset").permutation(rest)[:n_train])
    test_idx = np.sort(make_rng(seed, STAGE, "test_subset").permutation(len(test[1]))[:n_test])
    pick = lambda split, idx: (split[0][idx], split[1][idx].astype(np.int64))  # noqa: E731
    return {"cls_train": pick(train, train_idx), "cls_val": pick(train, val_idx), "cls_test": pick(test, test_idx)}


def scene_splits(data: dict, seed: int) -> tuple[dict[str, dict[str, np.ndarray]], list[str]]:
    """({"scenes_train", "scenes_val"}: scene dict, class names) for `data.scene_source`."""
    source, size = data["scene_source"], int(data["scene_size"])
    wanted = {"scenes_train": int(data["scene_train"]), "scenes_val": int(data["scene_val"])}
    if source not in SCENE_SOURCES:
        raise ValueError(f"data.scene_source {source!r} is not supported (allowed: {', '.join(SCENE_SOURCES)})")
    if source == "synthetic":
        k = scene_classes(int(data["num_classes"]))
        scenes = {
            key: make_scenes(n, size, k, int(data["max_objects"]), make_rng(seed, STAGE, key))
            for key, n in wanted.items()
        }
        return scenes, shape_names(k)
    from nasstudy.data.detseg import load_coco, load_voc

    root = Path(data["scene_root"])
    splits = {"scenes_train": data["scene_train_split"], "scenes_val": data["scene_val_split"]}
    scenes, names = {}, None
    for key, split in splits.items():
        if source == "coco":
            sc, found = load_coco(root, split, size)
        else:  # the val split takes the train split's class order, so labels mean the same in both
            sc, found = load_voc(root, split, size, class_names=names, allow_empty=True)
        if names is not None and found != names:
            raise DataError(f"{root} ({split}): categories differ from the {splits['scenes_train']} split's")
        names = found
        n = len(sc["images"])
        if wanted[key] > n:
            raise DataError(f"{root} ({split}): data.{key.replace('scenes', 'scene')} = {wanted[key]}, it has {n}")
        idx = np.sort(make_rng(seed, STAGE, key, "subset").permutation(n)[: wanted[key]])
        scenes[key] = subset_scenes(sc, idx)
        if not len(scenes[key]["boxes"]):  # detection would train or score on nothing: mAP 0.00, no word
            raise DataError(
                f"{root} ({split}): the {len(idx)} scenes used hold no usable box (of {len(sc['boxes'])} in the "
                f"split's {n} images): every box is missing, crowd, outside the image or under 1 px at "
                f"scene_size {size}"
            )
    return scenes, list(names or [])


def subset_scenes(scenes: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    """The scenes at `idx` (sorted) with their boxes, box_image renumbered to the new positions."""
    new_pos = np.full(len(scenes["images"]), -1, dtype=np.int64)
    new_pos[idx] = np.arange(len(idx))
    keep = new_pos[scenes["box_image"]] >= 0
    return {
        "images": scenes["images"][idx],
        "masks": scenes["masks"][idx],
        "boxes": scenes["boxes"][keep],
        "box_labels": scenes["box_labels"][keep],
        "box_image": new_pos[scenes["box_image"][keep]],
    }
