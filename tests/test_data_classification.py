"""Real classification loaders: CIFAR pickles, npz, ImageFolder trees, the train/val split, and DataError."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nasstudy.data.classification import (
    DataError,
    load_cifar,
    load_image_folder,
    load_npz,
    train_val_indices,
    train_val_split,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CIFAR = DATA / "cifar10"
CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
needs_cifar = pytest.mark.skipif(
    not (CIFAR / "train.npz").is_file() or not (CIFAR / "test.npz").is_file(),
    reason=f"real CIFAR-10 npz files not found in {CIFAR} (the shared data folder is absent here)",
)


@pytest.fixture(scope="module")
def cifar_train() -> tuple[np.ndarray, np.ndarray]:
    if not (CIFAR / "train.npz").is_file():
        pytest.skip(f"real CIFAR-10 train.npz not found in {CIFAR}")
    return load_npz(CIFAR / "train.npz")


class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 `str` (SHORT_BINSTRING/BINSTRING), as the official cPickle files do.

    Python 3 reads such strings as str under encoding="latin1" (torchvision) and as bytes under
    encoding="bytes" (the CIFAR web page's `unpickle`), so the written files behave like the real ones
    for both readers; numpy arrays pickled this way are what Python 2 numpy wrote too.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_str8(self, obj: bytes) -> None:
        n = len(obj)
        head = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        self.write(head + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_str8


def _dump_py2(obj: object, path: Path) -> None:
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def _chw_rows(images: np.ndarray) -> np.ndarray:
    """(N, 3072) uint8 rows, channel-major (all R, then G, then B), as the official batches store them."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), -1))


def write_cifar10(folder: Path, images: np.ndarray, labels: np.ndarray, n_test: int) -> None:
    """An official-layout `cifar-10-batches-py` folder: 5 train batches + test_batch + batches.meta."""
    folder.mkdir(parents=True)
    train_x, train_y = images[:-n_test], labels[:-n_test]
    for b, idx in enumerate(np.array_split(np.arange(len(train_x)), 5), start=1):
        batch = {
            b"batch_label": f"training batch {b} of 5".encode(),
            b"labels": [int(v) for v in train_y[idx]],
            b"data": _chw_rows(train_x[idx]),
            b"filenames": [f"img_{i}.png".encode() for i in idx],
        }
        _dump_py2(batch, folder / f"data_batch_{b}")
    test = {
        b"batch_label": b"testing batch 1 of 1",
        b"labels": [int(v) for v in labels[-n_test:]],
        b"data": _chw_rows(images[-n_test:]),
        b"filenames": [f"test_{i}.png".encode() for i in range(n_test)],
    }
    _dump_py2(test, folder / "test_batch")
    meta = {b"num_cases_per_batch": 10000, b"label_names": [n.encode() for n in CIFAR_NAMES], b"num_vis": 3072}
    _dump_py2(meta, folder / "batches.meta")


@needs_cifar
def test_load_npz_real_cifar10(cifar_train):
    x, y = cifar_train
    assert x.shape == (10000, 32, 32, 3) and x.dtype == np.uint8
    assert y.shape == (10000,) and y.dtype == np.int64
    assert np.bincount(y, minlength=10).tolist() == [1000] * 10
    xt, yt = load_npz(CIFAR / "test.npz")
    assert xt.shape == (10000, 32, 32, 3) and xt.dtype == np.uint8 and yt.dtype == np.int64
    assert 0 <= yt[:500].min() and yt[:500].max() <= 9
    assert 20 < x[:200].mean() < 235 and x[:200].std() > 20  # real photos, not blank arrays


@needs_cifar
def test_load_cifar10_pickle_layout_matches_npz(tmp_path, cifar_train):
    x, y = cifar_train[0][:200], cifar_train[1][:200]
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, x, y, n_test=40)
    with open(folder / "data_batch_1", "rb") as f:  # same keys as the official files under encoding="bytes"
        raw = pickle.load(f, encoding="bytes")
    assert set(raw) == {b"batch_label", b"labels", b"data", b"filenames"} and raw[b"data"].shape == (32, 3072)
    for root in (tmp_path, folder):  # the parent of the folder, or the folder itself
        tx, ty = load_cifar(root, "cifar10", train=True)
        np.testing.assert_array_equal(tx, x[:160])
        np.testing.assert_array_equal(ty, y[:160])
        assert tx.dtype == np.uint8 and ty.dtype == np.int64 and tx.flags.c_contiguous
    vx, vy = load_cifar(tmp_path, "cifar10", train=False)
    np.testing.assert_array_equal(vx, x[160:])
    np.testing.assert_array_equal(vy, y[160:])


def test_load_cifar100_layout(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)
    fine = rng.integers(0, 100, 30)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, sl in (("train", slice(0, 20)), ("test", slice(20, 30))):
        batch = {
            b"fine_labels": fine[sl].tolist(),
            b"coarse_labels": (fine[sl] // 5).tolist(),
            b"data": _chw_rows(x[sl]),
        }
        _dump_py2(batch, folder / name)
    _dump_py2({b"fine_label_names": [f"c{i}".encode() for i in range(100)]}, folder / "meta")
    tx, ty = load_cifar(tmp_path, "cifar100", train=True)
    np.testing.assert_array_equal(tx, x[:20])
    np.testing.assert_array_equal(ty, fine[:20])
    vx, vy = load_cifar(folder, "cifar100", train=False)
    np.testing.assert_array_equal(vx, x[20:])
    np.testing.assert_array_equal(vy, fine[20:])


def test_load_image_folder(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    y = np.array([2, 0, 1, 2, 0, 1, 2])
    names = ["zebra", "ant", "moth"]  # folder names; classes come back sorted
    for i, (img, label) in enumerate(zip(x, y)):
        (tmp_path / names[label]).mkdir(exist_ok=True)
        Image.fromarray(img).save(tmp_path / names[label] / f"{i:02d}.png")
    (tmp_path / "ant" / "notes.txt").write_text("not an image, ignored by extension")
    images, labels, classes = load_image_folder(tmp_path, 32)
    assert classes == ["ant", "moth", "zebra"]
    assert images.shape == (7, 32, 32, 3) and images.dtype == np.uint8 and labels.dtype == np.int64
    sorted_names = {n: k for k, n in enumerate(classes)}
    order = sorted(range(7), key=lambda i: (sorted_names[names[y[i]]], i))  # ImageFolder: class, then file
    np.testing.assert_array_equal(images, x[order])  # same size: lossless PNG, no resampling
    np.testing.assert_array_equal(labels, [sorted_names[names[y[i]]] for i in order])
    small, _, _ = load_image_folder(tmp_path, 16)
    assert small.shape == (7, 16, 16, 3)


def test_train_val_split_disjoint_deterministic():
    labels = np.repeat(np.arange(5), [40, 30, 20, 6, 4])
    images = np.arange(len(labels))[:, None, None, None].repeat(2, axis=1)
    (tx, ty), (vx, vy) = train_val_split(images, labels, 20, np.random.default_rng(7))
    assert len(vx) == 20 and len(tx) == 80 and len(ty) == 80 and len(vy) == 20
    tr, va = tx[:, 0, 0, 0], vx[:, 0, 0, 0]
    assert not set(tr) & set(va) and sorted([*tr, *va]) == list(range(100))
    np.testing.assert_array_equal(ty, labels[tr])
    assert np.bincount(vy, minlength=5).tolist() == [8, 6, 4, 1, 1]  # stratified: 20% of each class
    (tx2, _), (vx2, _) = train_val_split(images, labels, 20, np.random.default_rng(7))
    np.testing.assert_array_equal(vx, vx2)
    np.testing.assert_array_equal(tx, tx2)
    _, (vx3, _) = train_val_split(images, labels, 20, np.random.default_rng(8))
    assert not np.array_equal(vx, vx3)
    tr_p, va_p = train_val_indices(labels, 0.25, np.random.default_rng(7), stratify=False)
    assert len(va_p) == 25 and len(tr_p) == 75 and not set(tr_p) & set(va_p)
    with pytest.raises(ValueError):
        train_val_indices(labels, 100, np.random.default_rng(0))


def _one_line_with(excinfo: pytest.ExceptionInfo, path: Path) -> None:
    msg = str(excinfo.value)
    assert str(path) in msg and "\n" not in msg, msg


def test_cifar_errors(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataError) as e:
        load_cifar(missing)
    _one_line_with(e, missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as e:  # wrong layout: a folder without the batch files
        load_cifar(tmp_path / "empty")
    _one_line_with(e, tmp_path / "empty")
    assert "data_batch_1" in str(e.value)
    folder = tmp_path / "bad" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "batches.meta"):
        (folder / name).write_bytes(b"this is not a pickle")
    with pytest.raises(DataError) as e:  # corrupt pickle
        load_cifar(tmp_path / "bad")
    _one_line_with(e, folder)
    _dump_py2({b"labels": [0, 1], b"data": np.zeros((2, 100), np.uint8)}, folder / "data_batch_1")
    for b in range(2, 6):
        _dump_py2({b"labels": [], b"data": np.zeros((0, 3072), np.uint8)}, folder / f"data_batch_{b}")
    _dump_py2({b"label_names": [n.encode() for n in CIFAR_NAMES]}, folder / "batches.meta")
    with pytest.raises(DataError) as e:  # rows of the wrong length
        load_cifar(folder)
    _one_line_with(e, folder)


def test_npz_errors(tmp_path):
    with pytest.raises(DataError) as e:
        load_npz(tmp_path / "missing.npz")
    _one_line_with(e, tmp_path / "missing.npz")
    cases = {
        "three_d.npz": {"images": np.zeros((4, 32, 32), np.uint8), "labels": np.zeros(4, np.int64)},
        "float.npz": {"images": np.zeros((4, 8, 8, 3), np.float32), "labels": np.zeros(4, np.int64)},
        "short_labels.npz": {"images": np.zeros((4, 8, 8, 3), np.uint8), "labels": np.zeros(3, np.int64)},
        "float_labels.npz": {"images": np.zeros((4, 8, 8, 3), np.uint8), "labels": np.zeros(4, np.float32)},
        "negative.npz": {"images": np.zeros((2, 8, 8, 3), np.uint8), "labels": np.array([0, -1])},
        "no_labels.npz": {"images": np.zeros((2, 8, 8, 3), np.uint8)},
    }
    for name, arrays in cases.items():
        np.savez(tmp_path / name, **arrays)
        with pytest.raises(DataError) as e:
            load_npz(tmp_path / name)
        _one_line_with(e, tmp_path / name)
    (tmp_path / "garbage.npz").write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(DataError) as e:
        load_npz(tmp_path / "garbage.npz")
    _one_line_with(e, tmp_path / "garbage.npz")


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError) as e:
        load_image_folder(tmp_path / "missing", 16)
    _one_line_with(e, tmp_path / "missing")
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "flat" / "a.png")  # images but no class folders
    with pytest.raises(DataError) as e:
        load_image_folder(tmp_path / "flat", 16)
    _one_line_with(e, tmp_path / "flat")
    (tmp_path / "hollow" / "cat").mkdir(parents=True)  # a class folder with no images
    with pytest.raises(DataError) as e:
        load_image_folder(tmp_path / "hollow", 16)
    _one_line_with(e, tmp_path / "hollow")
    (tmp_path / "broken" / "cat").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "broken" / "cat" / "ok.png")
    bad = tmp_path / "broken" / "cat" / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError) as e:
        load_image_folder(tmp_path / "broken", 16)
    _one_line_with(e, bad)
