"""Real detection/segmentation scenes (COCO and Pascal VOC layouts) as the arrays the pipeline consumes.

Both readers return the scene dict of `synthetic.make_scenes`: `images` (N,S,S,3 uint8), `masks` (N,S,S
uint8, 0 = background, 1..C = class), `boxes` (M,4 float32 xyxy pixels of the S x S image, x2/y2
exclusive), `box_labels` (M int64 in 1..C) and `box_image` (M int64), plus the class names (label k is
`class_names[k - 1]`).

Every image is resized keeping its aspect ratio so that its longer side is S (bilinear for the image,
nearest for the mask, both with PIL), then padded at the bottom/right with zeros (mask 0 = background) to
S x S; boxes are scaled by the same per-axis factors and clipped to the resized image. A box narrower or
lower than 1 px after scaling is dropped (like synthetic objects too small to box), while its pixels stay
in the mask, which shows what is visible. Images with no objects are kept (empty boxes, all-background
mask). EXIF orientation is not applied: COCO and VOC annotations refer to the stored pixel grid.

Malformed input raises `DataError` (from `classification`) with one line naming the path.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

from nasstudy.data.classification import DataError, to_rgb8

COCO_LAYOUT = "root/annotations/instances_<split>.json and root/<split>/<file_name> images"
VOC_LAYOUT = (
    "root/ImageSets/{Segmentation,Main}/<split>.txt, root/Annotations/<id>.xml, root/JPEGImages/<image>, "
    "root/SegmentationClass/<id>.png"
)
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
VOC_VOID = 255  # VOC marks object borders and unlabelled pixels with 255; read as background (0)
MAX_CLASSES = 255  # masks are uint8, as in synthetic scenes


# ---------------------------------------------------------------- shared: resize, pad, stack


def letterbox(
    image: Image.Image, mask: np.ndarray, boxes: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(image S,S,3 uint8, mask S,S uint8, scaled boxes float32, keep bool) for one full-size sample.

    Longer side -> `size` (aspect kept), zero padding bottom/right; `keep` marks boxes at least 1 px wide
    and high after scaling and clipping.
    """
    w, h = image.size
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    img = np.zeros((size, size, 3), np.uint8)
    img[:nh, :nw] = np.asarray(image.convert("RGB").resize((nw, nh), Image.BILINEAR))
    m = np.zeros((size, size), np.uint8)
    m[:nh, :nw] = np.asarray(Image.fromarray(mask.astype(np.uint8)).resize((nw, nh), Image.NEAREST))
    b = np.asarray(boxes, np.float64).reshape(-1, 4) * np.array([nw / w, nh / h, nw / w, nh / h])
    b = np.clip(b, 0, [nw, nh, nw, nh])
    keep = (b[:, 2] - b[:, 0] >= 1) & (b[:, 3] - b[:, 1] >= 1)
    return img, m, b.astype(np.float32), keep


def _stack(samples: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """Scene dict from per-image (image, mask, boxes, labels), boxes concatenated with their image index."""
    return {
        "images": np.stack([s[0] for s in samples]),
        "masks": np.stack([s[1] for s in samples]),
        "boxes": np.concatenate([s[2] for s in samples]).astype(np.float32).reshape(-1, 4),
        "box_labels": np.concatenate([s[3] for s in samples]).astype(np.int64),
        "box_image": np.concatenate([np.full(len(s[2]), i, np.int64) for i, s in enumerate(samples)]),
    }


def _open_rgb(path: Path, listed_in: Path) -> Image.Image:
    """The decoded RGB image at `path`; a missing or corrupt file is a DataError naming it."""
    if not path.is_file():
        raise DataError(f"{path}: image missing (listed in {listed_in})")
    try:
        with Image.open(path) as im:
            return to_rgb8(im, path)  # decodes fully, so truncated files fail here
    except (OSError, ValueError, SyntaxError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: corrupt or unreadable image ({e})") from e


def _check_size(image: Image.Image, want: tuple[int, int], path: Path, source: Path) -> None:
    if image.size != want:
        raise DataError(f"{path}: image is {image.size[0]}x{image.size[1]}, {source} says {want[0]}x{want[1]}")


def _check_classes(names: list[str], source: Path) -> None:
    if not names:
        raise DataError(f"{source}: empty category list; at least one class is needed")
    if len(names) > MAX_CLASSES:
        raise DataError(f"{source}: {len(names)} classes, masks are uint8 and hold at most {MAX_CLASSES}")


# ---------------------------------------------------------------- COCO


def read_coco(ann_file: str | Path):
    """A pycocotools COCO index of `ann_file`, checked: categories present, every annotation's image and
    category listed. pycocotools' own progress prints are silenced (they would mix into stage logs)."""
    from pycocotools.coco import COCO

    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise DataError(f"{ann_file}: annotation file missing; expected {COCO_LAYOUT}")
    try:
        data = json.loads(ann_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{ann_file}: unreadable COCO JSON ({e})") from e
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "categories")):
        raise DataError(f"{ann_file}: not a COCO instances file; expected lists 'images', 'annotations', 'categories'")
    data.setdefault("annotations", [])
    _check_classes(data["categories"], ann_file)
    image_ids = {im["id"] for im in data["images"]}
    cat_ids = {c["id"] for c in data["categories"]}
    for a in data["annotations"]:
        _check_bbox(a, ann_file)
        if a.get("image_id") not in image_ids:
            raise DataError(f"{ann_file}: annotation {a.get('id')} points at image_id {a.get('image_id')}, not listed")
        if a.get("category_id") not in cat_ids:
            raise DataError(f"{ann_file}: annotation {a.get('id')} has unknown category_id {a.get('category_id')}")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)


def _check_bbox(a: dict, ann_file: Path) -> None:
    """A COCO bbox is [x, y, width, height] of finite numbers with width, height >= 0 (strings would be
    concatenated by `x + w`, negative sizes give inverted boxes); `area`, when given, is a number."""
    box = a.get("bbox")
    if not (isinstance(box, list) and len(box) == 4 and all(map(_is_number, box)) and min(box[2:]) >= 0):
        raise DataError(
            f"{ann_file}: annotation {a.get('id')} has bbox {box!r}; expected [x, y, width, height], "
            f"4 finite numbers with width and height >= 0"
        )
    if "area" in a and not _is_number(a["area"]):
        raise DataError(f"{ann_file}: annotation {a.get('id')} has area {a['area']!r}; expected a finite number")


def coco_categories(coco) -> tuple[list[str], dict[int, int]]:
    """(class names, {COCO category id: label}): labels 1..C in sorted category-id order.

    All categories the file lists count, used or not, so train and val files with the same category list
    give the same labels even when a split lacks some classes.
    """
    cats = sorted(coco.dataset["categories"], key=lambda c: c["id"])
    return [c["name"] for c in cats], {c["id"]: k for k, c in enumerate(cats, start=1)}


def coco_targets(
    coco, image_id: int, label_of: dict[int, int], min_area: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full-resolution (semantic mask H,W uint8, boxes K,4 float32 xyxy, labels K int64) of one image.

    Crowd annotations (iscrowd=1) are skipped, as are those whose COCO `area` is below `min_area` (in
    original pixels): neither boxed nor painted. Polygon and RLE segmentations are decoded by pycocotools.
    Semantic-mask rule: instances are painted in order of decreasing `area` (ties by annotation id), so a
    smaller object lying on a larger one stays visible, and where two overlap the smaller one wins.
    Boxes come from the COCO `bbox` ([x, y, w, h] -> [x, y, x + w, y + h]) in the same order.
    """
    info = coco.imgs[image_id]
    anns = [a for a in coco.imgToAnns[image_id] if not a.get("iscrowd", 0) and a.get("area", 0.0) >= min_area]
    anns.sort(key=lambda a: (-a.get("area", 0.0), a["id"]))
    mask = np.zeros((info["height"], info["width"]), np.uint8)
    with warnings.catch_warnings():  # pycocotools' C decoder trips a numpy-2 DeprecationWarning on every call
        warnings.filterwarnings("ignore", "__array__ implementation doesn't accept a copy", DeprecationWarning)
        for a in anns:
            try:
                inst = coco.annToMask(a)
            except (ValueError, TypeError, KeyError, IndexError) as e:
                where = f"annotation {a['id']} of image {info['file_name']}"
                raise DataError(f"{where}: undecodable segmentation ({e})") from e
            mask[inst > 0] = label_of[a["category_id"]]
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], np.float32).reshape(-1, 4)
    labels = np.array([label_of[a["category_id"]] for a in anns], np.int64)
    return mask, boxes, labels


def load_coco(
    root: str | Path, split: str, size: int, min_area: float = 0.0
) -> tuple[dict[str, np.ndarray], list[str]]:
    """(scene dict, class names) for `root/annotations/instances_<split>.json` and the images in
    `root/<split>/`, e.g. split "val2017"; images in ascending image id. See `coco_targets` for the rules."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found; expected COCO layout {COCO_LAYOUT}")
    ann_file = root / "annotations" / f"instances_{split}.json"
    if not ann_file.is_file():
        found = sorted(p.stem.removeprefix("instances_") for p in (root / "annotations").glob("instances_*.json"))
        raise DataError(f"{ann_file}: annotation file missing (splits found: {found}); expected {COCO_LAYOUT}")
    coco = read_coco(ann_file)
    names, label_of = coco_categories(coco)
    image_dir = root / split
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: image folder missing; expected {COCO_LAYOUT}")
    samples = []
    for image_id in sorted(coco.getImgIds()):
        info = coco.imgs[image_id]
        path = image_dir / info["file_name"]
        image = _open_rgb(path, ann_file)
        _check_size(image, (info["width"], info["height"]), path, ann_file)
        try:
            mask, boxes, labels = coco_targets(coco, image_id, label_of, min_area)
        except DataError as e:
            raise DataError(f"{ann_file}: {e}") from e
        img, m, b, keep = letterbox(image, mask, boxes, size)
        samples.append((img, m, b[keep], labels[keep]))
    if not samples:
        raise DataError(f"{ann_file}: lists no images")
    return _stack(samples), names


# ---------------------------------------------------------------- Pascal VOC


def _voc_split_ids(root: Path, split: str) -> tuple[Path, list[str]]:
    """Image ids of `split`: ImageSets/Segmentation/<split>.txt if present (every id there has a mask),
    else ImageSets/Main/<split>.txt. The first token of each non-empty line is the id."""
    for sub in ("Segmentation", "Main"):
        path = root / "ImageSets" / sub / f"{split}.txt"
        if path.is_file():
            ids = [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            if not ids:
                raise DataError(f"{path}: lists no image ids")
            return path, ids
    raise DataError(f"{root / 'ImageSets'}: no Segmentation/{split}.txt or Main/{split}.txt; expected {VOC_LAYOUT}")


def _num(obj: ET.Element, tag: str, xml: Path) -> float:
    text = obj.findtext(tag)
    try:
        return float(text)
    except (TypeError, ValueError) as e:
        raise DataError(f"{xml}: object field {tag!r} is {text!r}, expected a number") from e


def read_voc_xml(xml: Path, include_difficult: bool = True) -> dict:
    """{'filename', 'size' (w, h) or None, 'objects': [(name, [x1, y1, x2, y2])]} of one VOC annotation.

    VOC boxes are 1-based with inclusive max corners; they are turned into the pipeline's 0-based xyxy
    with exclusive x2/y2: (xmin - 1, ymin - 1, xmax, ymax).
    """
    if not xml.is_file():
        raise DataError(f"{xml}: annotation file missing; expected {VOC_LAYOUT}")
    try:
        tree = ET.parse(xml).getroot()
    except (ET.ParseError, OSError) as e:
        raise DataError(f"{xml}: unreadable VOC XML ({e})") from e
    objects = []
    for obj in tree.findall("object"):
        name = (obj.findtext("name") or "").strip()
        box = obj.find("bndbox")
        if not name or box is None:
            raise DataError(f"{xml}: an <object> lacks <name> or <bndbox>")
        if not include_difficult and int(_num(obj, "difficult", xml) if obj.find("difficult") is not None else 0):
            continue
        xmin, ymin, xmax, ymax = (_num(box, t, xml) for t in ("xmin", "ymin", "xmax", "ymax"))
        if not (xmin <= xmax and ymin <= ymax) or not np.isfinite([xmin, ymin, xmax, ymax]).all():
            raise DataError(f"{xml}: object {name!r} has bndbox {xmin:g},{ymin:g},{xmax:g},{ymax:g}; "
                            f"expected finite xmin <= xmax and ymin <= ymax")  # fmt: skip
        objects.append((name, [xmin - 1, ymin - 1, xmax, ymax]))
    size = tree.find("size")
    wh = (int(_num(size, "width", xml)), int(_num(size, "height", xml))) if size is not None else None
    return {"filename": (tree.findtext("filename") or "").strip(), "size": wh, "objects": objects}


def _voc_mask(path: Path, num_classes: int, want: tuple[int, int]) -> np.ndarray:
    """Class-index mask of a SegmentationClass PNG; void (255) becomes background 0."""
    if not path.is_file():
        raise DataError(f"{path}: segmentation mask missing; expected {VOC_LAYOUT}")
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise DataError(f"{path}: mask mode {im.mode}, expected a palette (P) or grey (L) PNG of class ids")
            mask = np.array(im, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: corrupt or unreadable mask ({e})") from e
    if mask.shape != (want[1], want[0]):
        raise DataError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]}, image is {want[0]}x{want[1]}")
    mask[mask == VOC_VOID] = 0
    if mask.max(initial=0) > num_classes:
        raise DataError(f"{path}: mask holds class id {mask.max()} beyond the {num_classes} classes; pass class_names")
    return mask


def load_voc(
    root: str | Path,
    split: str,
    size: int,
    class_names: list[str] | tuple[str, ...] | None = None,
    allow_empty: bool = False,
    include_difficult: bool = True,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """(scene dict, class names) of a Pascal VOC tree, in the order of the split file.

    Class order is `class_names` if given (mask value k means `class_names[k - 1]`; for real VOC pass
    `VOC_CLASSES`, the order its PNG indices use), else the sorted object names found in the split's XML,
    which is only right when the masks were written with that order. Mask value 255 (void: object borders,
    unlabelled pixels) is read as background 0, since the scene format has no ignore label. An XML with no
    objects raises DataError unless `allow_empty` (every real VOC image has at least one object, so an empty
    one usually means a truncated or wrong file). `include_difficult=False` drops objects marked difficult.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found; expected VOC layout {VOC_LAYOUT}")
    split_file, ids = _voc_split_ids(root, split)
    records = {i: read_voc_xml(root / "Annotations" / f"{i}.xml", include_difficult) for i in ids}
    for i, rec in records.items():
        if not rec["objects"] and not allow_empty:
            raise DataError(f"{root / 'Annotations' / f'{i}.xml'}: no objects (pass allow_empty=True to keep it)")
    if class_names is None:
        names = sorted({n for rec in records.values() for n, _ in rec["objects"]})
        _check_classes(names, split_file)
    else:
        names = list(class_names)
        _check_classes(names, split_file)
    label_of = {n: k for k, n in enumerate(names, start=1)}
    samples = []
    for i in ids:
        xml, rec = root / "Annotations" / f"{i}.xml", records[i]
        path = root / "JPEGImages" / (rec["filename"] or f"{i}.jpg")
        image = _open_rgb(path, xml)
        if rec["size"] is not None:
            _check_size(image, rec["size"], path, xml)
        unknown = sorted({n for n, _ in rec["objects"]} - label_of.keys())
        if unknown:
            raise DataError(f"{xml}: object names {unknown} are not in the class list")
        mask = _voc_mask(root / "SegmentationClass" / f"{i}.png", len(names), image.size)
        boxes = np.array([b for _, b in rec["objects"]], np.float32).reshape(-1, 4)
        labels = np.array([label_of[n] for n, _ in rec["objects"]], np.int64)
        img, m, b, keep = letterbox(image, mask, boxes, size)
        samples.append((img, m, b[keep], labels[keep]))
    return _stack(samples), names
