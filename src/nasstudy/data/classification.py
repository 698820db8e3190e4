"""Real image-classification data from local folders, as the arrays the pipeline consumes.

Every loader returns `images` (N,H,W,3 uint8, RGB, channels last) and `labels` (N int64, 0-based), the
same form `synthetic.make_classification` gives, so a real dataset can replace the synthetic one without
touching later stages. Nothing is ever downloaded: loaders read a local root and fail with a `DataError`
whose one-line message names the path and the layout that was expected, so a user on an air-gapped node
can fix the folder without reading a traceback.

torchvision is imported inside the functions that need it (it costs seconds to import), so importing
this module, or `DataError` from it, stays cheap.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np

CIFAR_LAYOUT = {
    "cifar10": "cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}",
    "cifar100": "cifar-100-python/{train, test, meta}",
}
NPZ_LAYOUT = "an .npz with arrays 'images' (N,H,W,3 uint8) and 'labels' (N integers >= 0)"
CIFAR_FILES = {  # name: (folder, meta file, label key, class-names key)
    "cifar10": ("cifar-10-batches-py", "batches.meta", "labels", "label_names"),
    "cifar100": ("cifar-100-python", "meta", "fine_labels", "fine_label_names"),
}
CIFAR_TRAIN = {"cifar10": [f"data_batch_{i}" for i in range(1, 6)], "cifar100": ["train"]}
CIFAR_TEST = {"cifar10": ["test_batch"], "cifar100": ["test"]}
FOLDER_LAYOUT = "root/<class name>/<image file> (ImageNet style, one folder per class)"
# What reading a damaged or foreign pickle (or torchvision's reshape of its rows) can raise.
_PICKLE_ERRORS = (pickle.UnpicklingError, OSError, EOFError, ValueError, KeyError, IndexError, TypeError,
                  AttributeError, OverflowError, RuntimeError)  # fmt: skip


class DataError(ValueError):
    """A dataset on disk is missing or malformed; the message is one line naming the path."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


# The only globals a CIFAR batch or meta pickle refers to: numpy arrays (Python 2 and 3 numpy, protocols
# 2-5) and the bytes that Python 3's protocol 2 writes through _codecs.encode. Anything else (os.system,
# builtins.eval, ...) is refused before it is called, so a crafted file in the data folder cannot run code.
_CIFAR_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}  # fmt: skip


class _CifarUnpickler(pickle.Unpickler):
    """pickle.Unpickler restricted to `_CIFAR_GLOBALS`: dicts, lists, strings, numbers and numpy arrays."""

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(f"refused global {module}.{name} (a CIFAR batch holds only numpy arrays)")
        return super().find_class(module, name)


def _read_cifar_pickle(path: Path) -> dict:
    """One CIFAR batch/meta file as a dict with str keys (latin1, as torchvision reads the official files)."""
    with open(path, "rb") as f:
        entry = _CifarUnpickler(f, encoding="latin1").load()
    if not isinstance(entry, dict):
        raise ValueError(f"{path.name} holds a {type(entry).__name__}, not a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}  # Python 3 writers


def load_cifar(root: str | Path, name: str = "cifar10", train: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10/100 from the official python-pickle layout: `root/cifar-10-batches-py/` (or
    `root/cifar-100-python/`), or `root` itself being that folder.

    Returns the training batches (all five for CIFAR-10) or the test batch, in file order; CIFAR-100 gives
    the fine labels. The pickles are read with a restricted unpickler (numpy arrays and plain types only),
    so a crafted file cannot run code; file contents are not compared with the official md5s, so a subset
    or re-packed batch in the same layout loads too.
    """
    if name not in CIFAR_LAYOUT:
        raise ValueError(f"name must be one of {sorted(CIFAR_LAYOUT)}, got {name!r}")
    root = Path(root)
    layout = CIFAR_LAYOUT[name]
    if not root.is_dir():
        raise DataError(f"{root}: folder not found; expected {layout} under it")
    base, meta, label_key, names_key = CIFAR_FILES[name]
    batches = CIFAR_TRAIN[name] if train else CIFAR_TEST[name]
    folder = base if (root / base).is_dir() else ""
    missing = [f for f in (*batches, meta) if not (root / folder / f).is_file()]
    if missing:
        raise DataError(f"{root / folder}: missing {', '.join(missing)}; expected {name} layout {layout}")
    try:
        entries = [_read_cifar_pickle(root / folder / f) for f in batches]
        images = np.vstack([e["data"] for e in entries]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        images = np.ascontiguousarray(images)
        labels = np.asarray([v for e in entries for v in e[label_key]], dtype=np.int64)
        num_classes = len(_read_cifar_pickle(root / folder / meta)[names_key])
    except _PICKLE_ERRORS as e:
        what = f"{type(e).__name__}: {e}"
        raise DataError(f"{root / folder}: corrupt or unreadable {name} pickle ({what}); expected {layout}") from e
    if images.dtype != np.uint8 or len(labels) != len(images):
        raise DataError(
            f"{root / folder}: {len(images)} images of {images.dtype} but {len(labels)} labels; "
            f"expected uint8 rows of 3072 values and one label each"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{root / folder}: labels span {labels.min()}..{labels.max()}, meta lists {num_classes}")
    return images, labels


def load_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The compact form: one .npz with `images` (N,H,W,3 uint8) and `labels` (N integers, made int64).

    Shapes and dtypes are checked here so a wrong file fails at load time, not inside a training loop.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected {NPZ_LAYOUT}")
    try:
        with np.load(path, allow_pickle=False) as f:
            if "images" not in f.files or "labels" not in f.files:
                raise DataError(f"{path}: holds arrays {f.files}; expected {NPZ_LAYOUT}")
            images, labels = f["images"], f["labels"]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: unreadable npz ({type(e).__name__}: {e}); expected {NPZ_LAYOUT}") from e
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(f"{path}: images are {images.dtype}{images.shape}; expected {NPZ_LAYOUT}")
    if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{path}: labels are {labels.dtype}{labels.shape} for {len(images)} images; expected {NPZ_LAYOUT}"
        )
    if len(labels) and labels.min() < 0:
        raise DataError(f"{path}: labels go down to {labels.min()}; expected {NPZ_LAYOUT}")
    return images, labels.astype(np.int64)


def load_image_folder(root: str | Path, image_size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """An ImageNet-style tree `root/<class>/<image>` as arrays, every image resized to image_size².

    Classes are the sub-folder names in sorted order (torchvision.datasets.ImageFolder's rule), so label i
    is `class_names[i]`. Images are converted to RGB and resized with bilinear filtering (aspect ratio not
    kept: the pipeline's classification arrays are square). Every image is decoded here, once, so a corrupt
    file is reported with its path before any training starts.
    """
    from PIL import Image

    root = Path(root)
    if int(image_size) < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    if not root.is_dir():
        raise DataError(f"{root}: folder not found; expected {FOLDER_LAYOUT}")
    if not any(p.is_dir() for p in root.iterdir()):
        raise DataError(f"{root}: no class folders (empty class list); expected {FOLDER_LAYOUT}")
    from torchvision.datasets import ImageFolder

    try:
        ds = ImageFolder(root)
    except (FileNotFoundError, ValueError) as e:
        raise DataError(f"{root}: {e}; expected {FOLDER_LAYOUT}") from e
    s = int(image_size)
    images = np.empty((len(ds.samples), s, s, 3), np.uint8)
    for i, (path, _) in enumerate(ds.samples):
        try:
            with Image.open(path) as im:
                img = to_rgb8(im, path)
        except (OSError, ValueError, SyntaxError) as e:
            if isinstance(e, DataError):
                raise
            raise DataError(f"{path}: corrupt or unreadable image ({e}); expected {FOLDER_LAYOUT}") from e
        images[i] = np.asarray(img.resize((s, s), Image.BILINEAR))
    labels = np.asarray(ds.targets, dtype=np.int64)
    return images, labels, list(ds.classes)


def to_rgb8(image, path: str | Path):  # noqa: ANN001, ANN201 - PIL images; PIL is imported lazily
    """`image` as 8-bit RGB, decoded fully (a truncated file fails here).

    `convert("RGB")` clips 16- and 32-bit integer pixels (modes I;16, I) at 255, so a 16-bit PNG came out
    pure white: those are scaled from 0..65535 to 0..255 instead. Float images (mode F) and integers
    outside 0..65535 have no agreed range and are refused with a DataError naming the file.
    """
    from PIL import Image

    if image.mode == "F":
        raise DataError(f"{path}: 32-bit float image (mode F) has no agreed pixel range; save it as 8- or 16-bit")
    if image.mode.startswith("I"):
        pixels = np.asarray(image).astype(np.int64)
        low, high = int(pixels.min(initial=0)), int(pixels.max(initial=0))
        if low < 0 or high > 65535:
            raise DataError(f"{path}: {image.mode} image with values {low}..{high}; expected 8- or 16-bit pixels")
        return Image.fromarray(np.rint(pixels / 257.0).astype(np.uint8), "L").convert("RGB")
    return image.convert("RGB")


def train_val_indices(
    labels: np.ndarray, val: int | float, rng: np.random.Generator, stratify: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, val) index arrays that split `labels` in two disjoint parts covering all of it.

    `val` is a count, or a fraction in (0, 1). With `stratify`, each class gives its share of the
    validation set (largest-remainder rounding), so a small val set keeps the class balance; otherwise a
    plain seeded permutation. The same generator state always gives the same split.
    """
    labels = np.asarray(labels)
    n = len(labels)
    n_val = int(round(val * n)) if isinstance(val, float) and 0 < val < 1 else int(val)
    if not 1 <= n_val < n:
        raise ValueError(f"val must leave both parts non-empty: asked for {val!r} of {n} samples")
    if not stratify:
        order = rng.permutation(n)
        return np.sort(order[n_val:]), np.sort(order[:n_val])
    classes, inverse = np.unique(labels, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(classes))
    exact = counts * n_val / n
    take = np.floor(exact).astype(int)
    extra = np.argsort(-(exact - take), kind="stable")[: n_val - take.sum()]
    take[extra] += 1
    val_idx = [rng.permutation(np.flatnonzero(inverse == c))[:k] for c, k in enumerate(take)]
    val_idx = np.sort(np.concatenate(val_idx))
    train_mask = np.ones(n, bool)
    train_mask[val_idx] = False
    return np.flatnonzero(train_mask), val_idx


def train_val_split(
    images: np.ndarray, labels: np.ndarray, val: int | float, rng: np.random.Generator, stratify: bool = True
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((train images, labels), (val images, labels)): the search split, drawn from the TRAINING set only.

    Architecture search must never see the test set, so the validation part it ranks architectures on
    comes out of the training data, as in the papers. See `train_val_indices` for `val` and `stratify`.
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    tr, va = train_val_indices(labels, val, rng, stratify)
    return (images[tr], labels[tr]), (images[va], labels[va])
