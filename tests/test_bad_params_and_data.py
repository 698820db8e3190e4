"""Bad params and data that used to pass silently now stop with one line naming the file, key or value.

Params: nan/inf floats, repeated keys, YAML anchors/aliases (an alias bomb), non-UTF-8, empty and
folder params files. Training: a loss that turns nan stops the job. Data: a crafted CIFAR pickle, an
ImageFolder with too few classes, 16-bit and float images, COCO/VOC splits without a usable box.
"""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.e2e import make_project, snakemake
from PIL import Image
from test_data_classification import CIFAR_NAMES, _chw_rows, write_cifar10
from torch import nn

from nasstudy import cli
from nasstudy.config import ParamsError, load_params, read_yaml
from nasstudy.data.classification import DataError, load_cifar, load_image_folder
from nasstudy.data.detseg import load_coco, load_voc, read_coco
from nasstudy.data.sources import classification_splits, scene_splits
from nasstudy.training import ClsData, make_generator, train_epoch


def one_line(text: str) -> str:
    lines = [x for x in str(text).splitlines() if x.strip()]
    assert len(lines) == 1, text
    return lines[0]


# ---------------------------------------------------------------- params files


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("retrain:\n  lr: .nan\n", "retrain.lr = nan is not allowed: must be a finite number"),
        ("supernet:\n  lr: .inf\n", "supernet.lr = inf is not allowed"),
        ("evolution:\n  nse:\n    alpha_lr: .NaN\n", "evolution.nse.alpha_lr = nan is not allowed"),
    ],
)
def test_non_finite_floats_are_rejected(tmp_path: Path, text: str, expected: str) -> None:
    p = tmp_path / "p.yaml"
    p.write_text(text)
    with pytest.raises(ParamsError) as e:
        load_params(p)
    assert expected in one_line(e.value)


def test_repeated_keys_name_the_key_and_both_lines(tmp_path: Path) -> None:
    p = tmp_path / "dup.yaml"
    p.write_text("search:\n  budget: 4\nretrain:\n  epochs: 2\nsearch:\n  methods: [random]\n")
    with pytest.raises(ParamsError) as e:
        read_yaml(p)
    assert one_line(e.value) == f"params file {p} repeats key 'search' (lines 1 and 5); each key may appear once"
    p.write_text("retrain:\n  lr: 0.1\n  epochs: 2\n  lr: 0.2\n")
    with pytest.raises(ParamsError, match=r"repeats key 'lr' \(lines 2 and 4\)"):
        read_yaml(p)


def test_yaml_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    """9 levels of 9 aliases: 387 million strings once expanded; refused before anything is expanded."""
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    p = tmp_path / "bomb.yaml"
    p.write_text("\n".join(lines) + "\nsearch:\n  budget: *i\n")
    start = time.perf_counter()
    with pytest.raises(ParamsError) as e:
        read_yaml(p)
    assert time.perf_counter() - start < 0.5
    assert "anchor &a (line 1); anchors and aliases are not allowed" in one_line(e.value)
    p.write_text("retrain:\n  lr: *x\n")  # an alias alone (undefined anchor) is named too
    with pytest.raises(ParamsError, match=r"alias \*x \(line 2\)|not valid YAML"):
        read_yaml(p)


def test_non_utf8_and_empty_params_files(tmp_path: Path) -> None:
    p = tmp_path / "latin1.yaml"
    p.write_bytes("study: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ParamsError) as e:
        load_params(p)
    assert one_line(e.value) == f"params file {p} is not UTF-8 text (byte 0xe9 at offset 10); save it as UTF-8"
    for text in ("", "# only a comment\n"):
        p = tmp_path / "empty.yaml"
        p.write_text(text)
        with pytest.raises(ParamsError) as e:
            load_params(p)
        assert one_line(e.value).startswith(f"params file {p} is empty")


def test_a_folder_as_params_file_is_named_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").mkdir()
    with pytest.raises(SystemExit) as e:
        cli.main(["run", "--params", "p.yaml"])
    assert e.value.code == 2
    assert one_line(capsys.readouterr().err) == (
        "params error: params file p.yaml is a folder, not a file; give the path of a YAML file"
    )


@pytest.mark.slow
def test_plain_snakemake_configfile_with_repeated_keys_is_refused(tmp_path: Path) -> None:
    """`snakemake --configfile` loads the file with Snakemake's own YAML loader; rules/common.smk re-reads it."""
    project = make_project(tmp_path)
    (tmp_path / "dup.yaml").write_text("study: a\nseed: 1\nstudy: b\n")
    out = snakemake(project, "--dry-run", "--configfile", "dup.yaml")
    assert out.returncode != 0
    dup = tmp_path / "dup.yaml"
    expected = f"params error: params file {dup} repeats key 'study' (lines 1 and 3); each key may appear once"
    assert one_line(out.stderr) == expected
    assert not (project / "results").exists()


@pytest.mark.parametrize("workflow", ["bench/nb201.smk", "bench/space_nb201.smk"])
def test_bench_workflow_configfile_with_repeated_keys_is_refused(tmp_path: Path, workflow: str) -> None:
    """The benchmark workflows re-read their --configfile with nasstudy's loader too."""
    project = make_project(tmp_path)
    dup = tmp_path / "dup.yaml"
    dup.write_text("study: a\nseed: 1\nstudy: b\n")
    out = snakemake(project, "-s", f"workflow/{workflow}", "--dry-run", "--configfile", str(dup))
    assert out.returncode != 0
    expected = f"params error: params file {dup} repeats key 'study' (lines 1 and 3); each key may appear once"
    assert out.stderr.strip().splitlines()[-1] == expected  # after Snakemake's own "Using workflow profile" line


# ---------------------------------------------------------------- training


def test_a_loss_that_turns_nan_stops_training_naming_the_epoch() -> None:
    from nasstudy.training import DivergedError

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3))
    data = ClsData(torch.randn(16, 3, 4, 4), torch.arange(16) % 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=float("nan"))  # first step finite, weights nan after
    with pytest.raises(DivergedError) as e:
        train_epoch(model, optimizer, data, 4, make_generator(0, "t"), desc="retrain epoch 3/10")
    assert one_line(e.value).startswith("retrain epoch 3/10: training loss became nan; the weights diverged")


# ---------------------------------------------------------------- CIFAR pickles


class _Evil:
    """Unpickling this calls open(path, "w"): a stand-in for any code a crafted pickle could run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # noqa: ANN204
        return (open, (str(self.path), "w"))


def test_crafted_cifar_pickle_does_not_run_code(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (60, 32, 32, 3), dtype=np.uint8), np.arange(60) % 10
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, images, labels, n_test=10)
    marker = tmp_path / "pwned"
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump({b"data": _Evil(marker), b"labels": [0]}, f, protocol=2)
    with pytest.raises(DataError) as e:
        load_cifar(tmp_path, "cifar10", train=True)
    assert not marker.exists(), "the crafted pickle ran code"
    msg = one_line(e.value)
    assert str(folder) in msg and "refused global io.open" in msg, msg


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar_batches_written_by_python3_pickle_still_load(tmp_path: Path, protocol: int) -> None:
    """Re-packed batches (plain pickle.dump, protocol 2 or 5) pass the restricted unpickler."""
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), np.arange(20) % 10
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    parts = [(f"data_batch_{i}", slice(4 * (i - 1), 4 * i)) for i in range(1, 6)] + [("test_batch", slice(0, 4))]
    for name, sl in parts:
        batch = {b"data": _chw_rows(x[sl]), b"labels": [np.int64(v) for v in y[sl]], b"batch_label": b"b"}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [n.encode() for n in CIFAR_NAMES]}, protocol))
    tx, ty = load_cifar(tmp_path, "cifar10", train=True)
    np.testing.assert_array_equal(tx, x)
    np.testing.assert_array_equal(ty, y)


# ---------------------------------------------------------------- ImageFolder


def _save(path: Path, image: Image.Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def test_imagefolder_with_fewer_classes_than_num_classes_fails(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 4)):
        for i in range(n):
            _save(tmp_path / split / "cat" / f"{i}.png", Image.fromarray(rng.integers(0, 256, (8, 8, 3), np.uint8)))
    data = {"source": "imagefolder", "root": str(tmp_path), "num_classes": 2, "image_size": 8,
            "train": 4, "val": 2, "test": 2}  # fmt: skip
    with pytest.raises(DataError) as e:
        classification_splits(data, seed=0)
    assert one_line(e.value) == f"{tmp_path}: 1 classes (cat) but data.num_classes = 2; they must match"


def test_16_bit_png_is_scaled_and_float_image_refused(tmp_path: Path) -> None:
    _save(tmp_path / "grey" / "a.png", Image.fromarray(np.full((8, 8), 30000, np.uint16)))
    assert Image.open(tmp_path / "grey" / "a.png").mode == "I;16"
    images, _, _ = load_image_folder(tmp_path, 4)
    assert images.shape == (1, 4, 4, 3) and (images == 117).all()  # 30000 / 257; convert("RGB") gave 255
    bad = tmp_path / "grey" / "b.tif"
    _save(bad, Image.fromarray(np.full((8, 8), 0.5, np.float32)))
    with pytest.raises(DataError) as e:
        load_image_folder(tmp_path, 4)
    assert one_line(e.value).startswith(f"{bad}: 32-bit float image (mode F)")


# ---------------------------------------------------------------- COCO / VOC boxes


def _coco(root: Path, split: str, boxes: list) -> Path:
    """A COCO split of two 32x32 images with one annotation per bbox in `boxes` (on image 1)."""
    (root / split).mkdir(parents=True, exist_ok=True)
    images = [{"id": i, "file_name": f"{i}.png", "width": 32, "height": 32} for i in (1, 2)]
    for im in images:
        Image.new("RGB", (32, 32), (90, 90, 90)).save(root / split / im["file_name"])
    anns = [{"id": k, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 4.0, "bbox": b,
             "segmentation": [[b[0], b[1], b[0] + b[2], b[1], b[0] + b[2], b[1] + b[3], b[0], b[1] + b[3]]]}
            for k, b in enumerate(boxes, start=1)]  # fmt: skip
    ann = root / "annotations" / f"instances_{split}.json"
    ann.parent.mkdir(parents=True, exist_ok=True)
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "x"}]}))
    return ann


def test_coco_split_with_only_degenerate_boxes_fails(tmp_path: Path) -> None:
    _coco(tmp_path, "train", [[4, 4, 10, 10]])
    _coco(tmp_path, "val", [[40, 40, 5, 5], [3, 3, 0, 6], [-20, 2, 10, 10]])  # outside, zero width, outside
    data = {"scene_source": "coco", "scene_root": str(tmp_path), "scene_size": 32, "scene_train": 2,
            "scene_val": 2, "scene_train_split": "train", "scene_val_split": "val"}  # fmt: skip
    with pytest.raises(DataError) as e:
        scene_splits(data, seed=0)
    assert one_line(e.value).startswith(f"{tmp_path} (val): the 2 scenes used hold no usable box (of 0 in")


@pytest.mark.parametrize(
    "bbox",
    [["10", "10", "5", "5"], [1, 1, -3, 4], [1, 1, 4], None, [1, 1, float("nan"), 2]],
    ids=["strings", "negative", "three", "missing", "nan"],
)
def test_malformed_coco_bbox_is_one_line(tmp_path: Path, bbox: object) -> None:
    ann = _coco(tmp_path, "val", [[1, 1, 4, 4]])
    coco = json.loads(ann.read_text())
    coco["annotations"][0]["bbox"] = bbox
    ann.write_text(json.dumps(coco))
    with pytest.raises(DataError) as e:
        read_coco(ann)
    assert one_line(e.value) == (
        f"{ann}: annotation 1 has bbox {bbox!r}; expected [x, y, width, height], "
        f"4 finite numbers with width and height >= 0"
    )
    with pytest.raises(DataError):
        load_coco(tmp_path, "val", 32)


def test_voc_box_with_negative_size_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("a\n")
    (tmp_path / "Annotations").mkdir()
    xml = tmp_path / "Annotations" / "a.xml"
    xml.write_text(
        "<annotation><filename>a.png</filename><object><name>cat</name>"
        "<bndbox><xmin>20</xmin><ymin>5</ymin><xmax>10</xmax><ymax>9</ymax></bndbox></object></annotation>"
    )
    with pytest.raises(DataError) as e:
        load_voc(tmp_path, "train", 32)
    expected = f"{xml}: object 'cat' has bndbox 20,5,10,9; expected finite xmin <= xmax and ymin <= ymax"
    assert one_line(e.value) == expected
