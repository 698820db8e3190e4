"""The synthetic world is deterministic, balanced and its boxes agree with its masks."""

import numpy as np
import pytest

from nasstudy.data.synthetic import CLASS_NAMES, class_names, make_classification, make_scenes


def test_class_names():
    assert class_names(6) == ["circle", "square", "triangle", "cross", "ring", "star"]
    assert class_names(len(CLASS_NAMES)) == list(CLASS_NAMES)
    with pytest.raises(ValueError):
        class_names(len(CLASS_NAMES) + 1)


def test_classification_deterministic_and_balanced():
    x1, y1 = make_classification(40, 16, 8, np.random.default_rng(1))
    x2, y2 = make_classification(40, 16, 8, np.random.default_rng(1))
    x3, _ = make_classification(40, 16, 8, np.random.default_rng(2))
    assert x1.shape == (40, 16, 16, 3) and x1.dtype == np.uint8
    assert y1.shape == (40,) and y1.dtype == np.int64
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(x1, x3)
    counts = np.bincount(y1, minlength=8)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 40
    assert not np.array_equal(y1, np.sort(y1))  # shuffled


def test_scenes_shapes_and_determinism():
    a = make_scenes(6, 48, 5, 4, np.random.default_rng(3))
    b = make_scenes(6, 48, 5, 4, np.random.default_rng(3))
    c = make_scenes(6, 48, 5, 4, np.random.default_rng(4))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["images"], c["images"])
    m = len(a["boxes"])
    assert a["images"].shape == (6, 48, 48, 3) and a["images"].dtype == np.uint8
    assert a["masks"].shape == (6, 48, 48) and a["masks"].dtype == np.uint8
    assert a["boxes"].shape == (m, 4) and a["boxes"].dtype == np.float32
    assert a["box_labels"].shape == (m,) and a["box_labels"].dtype == np.int64
    assert a["box_image"].shape == (m,) and a["box_image"].dtype == np.int64
    assert m >= 6  # the last object of a scene is never occluded


def test_boxes_agree_with_masks():
    s = make_scenes(10, 40, 8, 4, np.random.default_rng(5))
    masks, boxes = s["masks"], s["boxes"]
    assert masks.max() <= 8
    assert np.all((s["box_labels"] >= 1) & (s["box_labels"] <= 8))
    assert np.all((s["box_image"] >= 0) & (s["box_image"] < 10))
    assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2:] <= 40)
    assert np.all(boxes[:, 2:] > boxes[:, :2])
    assert np.array_equal(boxes, np.round(boxes))
    for (x0, y0, x1, y1), label, i in zip(boxes.astype(int), s["box_labels"], s["box_image"]):
        region = masks[i, y0:y1, x0:x1]
        assert (region == label).any()
        # the box is tight: its border rows and columns touch the object's class
        assert (region[0] == label).any() or (region[-1] == label).any()
    # every mask pixel of a scene with a box lies in some box of its image (tiny dropped parts aside)
    for i in range(10):
        fg = masks[i] > 0
        covered = np.zeros_like(fg)
        for x0, y0, x1, y1 in boxes[s["box_image"] == i].astype(int):
            covered[y0:y1, x0:x1] = True
        assert (fg & ~covered).sum() <= 0.1 * fg.sum()
