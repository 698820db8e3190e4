"""Real detection/segmentation loaders: tiny_coco through load_coco, a VOC copy of it through load_voc
(same boxes and masks), the mask rules on hand-made annotations, and DataError for malformed trees."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from nasstudy.data.classification import DataError
from nasstudy.data.detseg import coco_categories, coco_targets, load_coco, load_voc, read_coco

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TINY = DATA / "detseg" / "tiny_coco"
SIZE = 128
KEYS = {"images": np.uint8, "masks": np.uint8, "boxes": np.float32, "box_labels": np.int64, "box_image": np.int64}
needs_tiny = pytest.mark.skipif(
    not (TINY / "annotations" / "instances_val2017.json").is_file(),
    reason=f"tiny_coco not found in {TINY} (the shared data folder is absent here)",
)


def _check_scenes(sc: dict, n: int, c: int) -> None:
    """The synthetic `make_scenes` format: keys, dtypes, shapes and value ranges."""
    assert {k: v.dtype for k, v in sc.items()} == KEYS
    assert sc["images"].shape == (n, SIZE, SIZE, 3) and sc["masks"].shape == (n, SIZE, SIZE)
    m = len(sc["boxes"])
    assert sc["boxes"].shape == (m, 4) and sc["box_labels"].shape == (m,) and sc["box_image"].shape == (m,)
    b = sc["boxes"]
    assert (b >= 0).all() and (b <= SIZE).all() and (b[:, 2] - b[:, 0] >= 1).all() and (b[:, 3] - b[:, 1] >= 1).all()
    assert m == 0 or (sc["box_labels"].min() >= 1 and sc["box_labels"].max() <= c)
    assert sc["masks"].max() <= c and (np.diff(sc["box_image"]) >= 0).all()
    assert m == 0 or sc["box_image"].max() < n


@pytest.fixture(scope="module")
def tiny_val():
    if not (TINY / "annotations" / "instances_val2017.json").is_file():
        pytest.skip(f"tiny_coco not found in {TINY}")
    return load_coco(TINY, "val2017", SIZE)


@needs_tiny
def test_tiny_coco_train_and_val(tiny_val):
    for split, sc_names in (("train2017", load_coco(TINY, "train2017", SIZE)), ("val2017", tiny_val)):
        sc, names = sc_names
        coco = read_coco(TINY / "annotations" / f"instances_{split}.json")
        cats = sorted(coco.dataset["categories"], key=lambda c: c["id"])
        assert names == [c["name"] for c in cats] and len(names) == 80  # all listed categories, id order
        assert names[0] == "person" and names[-1] == "toothbrush"  # id 1 -> 1, id 90 -> 80: contiguous
        _check_scenes(sc, 50, 80)
        non_crowd = sum(not a["iscrowd"] for a in coco.dataset["annotations"])
        assert 0.9 * non_crowd <= len(sc["boxes"]) <= non_crowd  # crowds skipped, a few tiny boxes dropped
        assert (sc["masks"] > 0).mean() > 0.05 and len(np.unique(sc["masks"])) > 20
        for i, image_id in enumerate(sorted(coco.getImgIds())):  # padding is bottom/right, zero, background
            w, h = coco.imgs[image_id]["width"], coco.imgs[image_id]["height"]
            nw, nh = round(w * SIZE / max(w, h)), round(h * SIZE / max(w, h))
            assert max(nw, nh) == SIZE
            assert not sc["images"][i, nh:].any() and not sc["images"][i, :, nw:].any()
            assert not sc["masks"][i, nh:].any() and not sc["masks"][i, :, nw:].any()
            b = sc["boxes"][sc["box_image"] == i]
            assert (b[:, 2] <= nw).all() and (b[:, 3] <= nh).all()
    train_labels = load_coco(TINY, "train2017", SIZE)[0]["box_labels"]
    assert names[np.bincount(train_labels).argmax() - 1] == "person"  # labels map back to the right names


def _voc_xml(filename: str, w: int, h: int, objects: list[tuple[str, list[float]]]) -> str:
    objs = "".join(
        f"<object><name>{escape(n)}</name><difficult>0</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
        f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        for n, (x1, y1, x2, y2) in objects
    )
    size = f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
    return f"<annotation><filename>{filename}</filename>{size}{objs}</annotation>"


def _write_mask(path: Path, mask: np.ndarray) -> None:
    """A VOC-style palette PNG holding class indices."""
    im = Image.fromarray(mask.astype(np.uint8))  # mode L; putpalette turns it into P with the same indices
    im.putpalette([v for i in range(256) for v in ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)])
    im.save(path)


@needs_tiny
def test_voc_copy_of_tiny_coco_gives_same_scenes(tmp_path, tiny_val):
    """Write val2017 as a VOC tree (original JPEG bytes, palette PNG class masks, XML boxes) and read it back.

    The XML holds the COCO boxes as VOC's 1-based inclusive corners written as full-precision decimals
    (xmin = x1 + 1, xmax = x2), so the boxes must agree to float rounding (1e-4 px); real VOC files use
    integers, whose conversion is checked in `test_voc_integer_boxes_and_default_classes`. Masks and
    images must be identical.
    """
    coco = read_coco(TINY / "annotations" / "instances_val2017.json")
    names, label_of = coco_categories(coco)
    for sub in ("Annotations", "JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (tmp_path / sub).mkdir(parents=True)
    ids = []
    for image_id in sorted(coco.getImgIds()):
        info = coco.imgs[image_id]
        stem = Path(info["file_name"]).stem
        ids.append(stem)
        shutil.copyfile(TINY / "val2017" / info["file_name"], tmp_path / "JPEGImages" / f"{stem}.jpg")
        mask, boxes, labels = coco_targets(coco, image_id, label_of)
        _write_mask(tmp_path / "SegmentationClass" / f"{stem}.png", mask)
        objects = [(names[k - 1], [repr(float(x1) + 1), repr(float(y1) + 1), repr(float(x2)), repr(float(y2))])
                   for k, (x1, y1, x2, y2) in zip(labels, boxes)]  # fmt: skip
        xml = _voc_xml(f"{stem}.jpg", info["width"], info["height"], objects)
        (tmp_path / "Annotations" / f"{stem}.xml").write_text(xml)
    (tmp_path / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids) + "\n")
    voc, voc_names = load_voc(tmp_path, "val", SIZE, class_names=names, allow_empty=True)
    ref, ref_names = tiny_val
    assert voc_names == ref_names
    for key in ("images", "masks", "box_labels", "box_image"):
        np.testing.assert_array_equal(voc[key], ref[key], err_msg=key)
    np.testing.assert_allclose(voc["boxes"], ref["boxes"], atol=1e-4, rtol=0)
    with pytest.raises(DataError) as e:  # tiny_coco val has images with no (non-crowd) objects
        load_voc(tmp_path, "val", SIZE, class_names=names)
    assert "no objects" in str(e.value) and str(tmp_path / "Annotations") in str(e.value)


def _mini_voc(root: Path, with_void: bool = True) -> np.ndarray:
    """Two 64x32 images; class order by name is [cat, dog]; returns the first mask as written."""
    for sub in ("Annotations", "JPEGImages", "SegmentationClass", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    mask = np.zeros((32, 64), np.uint8)
    mask[2:10, 5:15] = 2  # dog
    mask[12:18, 20:30] = 1  # cat
    if with_void:
        mask[1, 4:16] = 255  # a void border line
    objects = {"a": [("dog", [6, 3, 15, 10]), ("cat", [21, 13, 30, 18])], "b": [("cat", [1, 1, 64, 32])]}
    for stem, objs in objects.items():
        Image.new("RGB", (64, 32), (200, 100, 50)).save(root / "JPEGImages" / f"{stem}.png")
        (root / "Annotations" / f"{stem}.xml").write_text(_voc_xml(f"{stem}.png", 64, 32, objs))
        _write_mask(root / "SegmentationClass" / f"{stem}.png", mask if stem == "a" else (mask > 0) * 1)
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\nb\n")
    return mask


def test_voc_integer_boxes_and_default_classes(tmp_path):
    mask = _mini_voc(tmp_path)
    sc, names = load_voc(tmp_path, "train", SIZE)
    assert names == ["cat", "dog"]  # sorted names from the XML
    _check_scenes(sc, 2, 2)
    s = SIZE / 64  # 64x32 -> 128x64: VOC (6, 3, 15, 10) is pixels 5..14 x 2..9, i.e. xyxy (5, 2, 15, 10)
    np.testing.assert_allclose(sc["boxes"][:2], np.array([[5, 2, 15, 10], [20, 12, 30, 18]]) * s, atol=1e-5)
    np.testing.assert_array_equal(sc["box_labels"], [2, 1, 1])
    np.testing.assert_array_equal(sc["box_image"], [0, 0, 1])
    np.testing.assert_allclose(sc["boxes"][2], [0, 0, SIZE, 64])
    expect = np.where(mask == 255, 0, mask).repeat(2, 0).repeat(2, 1)  # void -> background; nearest x2
    np.testing.assert_array_equal(sc["masks"][0, :64], expect)
    assert not sc["masks"][:, 64:].any() and not sc["images"][:, 64:].any()
    assert (sc["images"][0, :64] == (200, 100, 50)).all()


def _coco_json(path: Path, images: list[dict], anns: list[dict], cats: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))


def test_coco_rle_polygon_crowd_and_paint_order(tmp_path):
    """Big polygon under a small RLE object: the small one stays visible; the crowd one is not painted."""
    (tmp_path / "s").mkdir()
    Image.new("RGB", (64, 32), (10, 20, 30)).save(tmp_path / "s" / "x.png")
    small = np.zeros((32, 64), np.uint8, order="F")
    small[8:16, 8:24] = 1
    rle = mask_utils.encode(small)
    rle["counts"] = rle["counts"].decode()
    crowd = np.zeros((32, 64), np.uint8, order="F")
    crowd[20:30, 40:60] = 1
    crowd_rle = mask_utils.encode(crowd)
    crowd_rle["counts"] = crowd_rle["counts"].decode()
    anns = [
        {"id": 1, "image_id": 7, "category_id": 9, "iscrowd": 0, "area": 128.0, "bbox": [8, 8, 16, 8],
         "segmentation": rle},
        {"id": 2, "image_id": 7, "category_id": 3, "iscrowd": 0, "area": 1120.0, "bbox": [2, 2, 40, 28],
         "segmentation": [[2, 2, 42, 2, 42, 30, 2, 30]]},
        {"id": 3, "image_id": 7, "category_id": 3, "iscrowd": 1, "area": 200.0, "bbox": [40, 20, 20, 10],
         "segmentation": crowd_rle},
    ]  # fmt: skip
    cats = [{"id": 9, "name": "kite"}, {"id": 3, "name": "car"}, {"id": 5, "name": "unused"}]
    image = {"id": 7, "file_name": "x.png", "width": 64, "height": 32}
    _coco_json(tmp_path / "annotations" / "instances_s.json", [image], anns, cats)
    sc, names = load_coco(tmp_path, "s", 64)
    assert names == ["car", "unused", "kite"]  # labels 1..3 in category-id order (3, 5, 9)
    m = sc["masks"][0]
    assert (m[8:16, 8:24] == 3).all()  # the smaller kite is painted over the larger car
    assert (m[2:8, 2:42] == 1).all() and (m[17:30, 25:42] == 1).all()
    assert not m[20:30, 43:60].any() and not m[32:].any()  # crowd skipped; padding is background
    np.testing.assert_array_equal(sc["box_labels"], [1, 3])  # decreasing area
    np.testing.assert_allclose(sc["boxes"], [[2, 2, 42, 30], [8, 8, 24, 16]])
    sc2, _ = load_coco(tmp_path, "s", 64, min_area=200.0)  # the small object is dropped entirely
    np.testing.assert_array_equal(sc2["box_labels"], [1])
    assert (sc2["masks"][0, 8:16, 8:24] == 1).all()


def _one_line_with(excinfo: pytest.ExceptionInfo, path: Path) -> None:
    msg = str(excinfo.value)
    assert str(path) in msg and "\n" not in msg, msg


def test_coco_errors(tmp_path):
    with pytest.raises(DataError) as e:
        load_coco(tmp_path / "missing", "val", SIZE)
    _one_line_with(e, tmp_path / "missing")
    img = {"id": 1, "file_name": "a.jpg", "width": 8, "height": 8}
    cat = [{"id": 1, "name": "thing"}]
    _coco_json(tmp_path / "annotations" / "instances_val.json", [img], [], cat)
    with pytest.raises(DataError) as e:  # missing annotation file for the split asked
        load_coco(tmp_path, "train", SIZE)
    _one_line_with(e, tmp_path / "annotations" / "instances_train.json")
    assert "val" in str(e.value)  # lists the splits that are there
    with pytest.raises(DataError) as e:  # image folder missing
        load_coco(tmp_path, "val", SIZE)
    _one_line_with(e, tmp_path / "val")
    (tmp_path / "val").mkdir()
    with pytest.raises(DataError) as e:  # annotation file points at a missing image
        load_coco(tmp_path, "val", SIZE)
    _one_line_with(e, tmp_path / "val" / "a.jpg")
    (tmp_path / "val" / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(DataError) as e:  # corrupt image
        load_coco(tmp_path, "val", SIZE)
    _one_line_with(e, tmp_path / "val" / "a.jpg")
    _coco_json(tmp_path / "annotations" / "instances_val.json", [img], [], [])
    with pytest.raises(DataError) as e:  # empty category list
        load_coco(tmp_path, "val", SIZE)
    _one_line_with(e, tmp_path / "annotations" / "instances_val.json")
    orphan = {"id": 5, "image_id": 2, "category_id": 1, "iscrowd": 0, "area": 4.0, "bbox": [0, 0, 2, 2]}
    _coco_json(tmp_path / "annotations" / "instances_val.json", [img], [orphan], cat)
    with pytest.raises(DataError) as e:  # annotation pointing at an image that is not listed
        load_coco(tmp_path, "val", SIZE)
    _one_line_with(e, tmp_path / "annotations" / "instances_val.json")
    (tmp_path / "annotations" / "instances_val.json").write_text("{not json")
    with pytest.raises(DataError) as e:
        load_coco(tmp_path, "val", SIZE)
    _one_line_with(e, tmp_path / "annotations" / "instances_val.json")


def test_voc_errors(tmp_path):
    with pytest.raises(DataError) as e:
        load_voc(tmp_path / "missing", "train", SIZE)
    _one_line_with(e, tmp_path / "missing")
    root = tmp_path / "voc"
    _mini_voc(root)
    with pytest.raises(DataError) as e:  # no split file
        load_voc(root, "val", SIZE)
    _one_line_with(e, root / "ImageSets")
    with pytest.raises(DataError) as e:  # empty class list
        load_voc(root, "train", SIZE, class_names=[])
    _one_line_with(e, root / "ImageSets" / "Main" / "train.txt")
    with pytest.raises(DataError) as e:  # a name the class list lacks
        load_voc(root, "train", SIZE, class_names=["cat"])
    _one_line_with(e, root / "Annotations" / "a.xml")
    (root / "Annotations" / "b.xml").write_text(_voc_xml("b.png", 64, 32, []))
    with pytest.raises(DataError) as e:  # XML without objects
        load_voc(root, "train", SIZE)
    _one_line_with(e, root / "Annotations" / "b.xml")
    assert load_voc(root, "train", SIZE, allow_empty=True)[0]["box_image"].tolist() == [0, 0]
    (root / "SegmentationClass" / "b.png").unlink()
    with pytest.raises(DataError) as e:  # missing mask
        load_voc(root, "train", SIZE, allow_empty=True)
    _one_line_with(e, root / "SegmentationClass" / "b.png")
    (root / "JPEGImages" / "a.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError) as e:  # corrupt image
        load_voc(root, "train", SIZE, allow_empty=True)
    _one_line_with(e, root / "JPEGImages" / "a.png")
    (root / "JPEGImages" / "a.png").unlink()
    with pytest.raises(DataError) as e:  # annotation pointing at a missing image
        load_voc(root, "train", SIZE, allow_empty=True)
    _one_line_with(e, root / "JPEGImages" / "a.png")
    (root / "Annotations" / "a.xml").write_text("<annotation><object>")
    with pytest.raises(DataError) as e:  # unreadable XML
        load_voc(root, "train", SIZE, allow_empty=True)
    _one_line_with(e, root / "Annotations" / "a.xml")
