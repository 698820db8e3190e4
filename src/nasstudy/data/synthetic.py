"""A synthetic image world of coloured shapes on cluttered backgrounds.

The embedded default study needs data that is small, made in seconds, identical on every machine,
and hard enough that architectures differ. Every image is drawn from signed-distance functions on
numpy coordinate grids (anti-aliased), from one `np.random.Generator` passed in, so the same
generator state always gives the same arrays.

Difficulty comes from: random colour, size, rotation and position; textured backgrounds (gradients,
low-frequency noise, stripes); sometimes low contrast; pixel noise; and distractors (blobs, lines,
arcs) that belong to no class.
"""

from __future__ import annotations

import numpy as np

CLASS_NAMES = ("circle", "square", "triangle", "cross", "ring", "star", "hexagon", "lshape")
MIN_VISIBLE_PIXELS = 12  # scene objects with less visible area than this get no box
CLS_RADIUS = (0.22, 0.45)  # object radius range, as a fraction of the image size
LOW_CONTRAST_PROB = 0.15


def class_names(num_classes: int) -> list[str]:
    """The first `num_classes` shape names; class id i (0-based) is `class_names(C)[i]`."""
    if not 1 <= num_classes <= len(CLASS_NAMES):
        raise ValueError(f"num_classes must be in 1..{len(CLASS_NAMES)}, got {num_classes}")
    return list(CLASS_NAMES[:num_classes])


def _regular(n: int, radius: float = 1.0, phase: float = 0.0) -> np.ndarray:
    a = phase + 2 * np.pi * np.arange(n) / n
    return radius * np.stack([np.cos(a), np.sin(a)], axis=1)


def _star() -> np.ndarray:
    outer = _regular(5, 1.0, -np.pi / 2)
    inner = _regular(5, 0.42, -np.pi / 2 + np.pi / 5)
    return np.stack([outer, inner], axis=1).reshape(10, 2)


_W = 0.3  # half-width of the cross's arms
# Unit polygons (about radius 1, centred); circle and ring are analytic.
_POLYGONS = {
    "square": np.array([[-0.72, -0.72], [0.72, -0.72], [0.72, 0.72], [-0.72, 0.72]]),
    "triangle": _regular(3, 1.0, -np.pi / 2),
    "cross": np.array(
        [
            [-_W, -1],
            [_W, -1],
            [_W, -_W],
            [1, -_W],
            [1, _W],
            [_W, _W],
            [_W, 1],
            [-_W, 1],
            [-_W, _W],
            [-1, _W],
            [-1, -_W],
            [-_W, -_W],
        ]
    ),  # fmt: skip
    "star": _star(),
    "hexagon": _regular(6, 0.92),
    "lshape": np.array([[-0.6, -0.9], [-0.05, -0.9], [-0.05, 0.35], [0.7, 0.35], [0.7, 0.9], [-0.6, 0.9]]),
}


def _polygon_sdf(px: np.ndarray, py: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) from pixel centres to a closed polygon, in pixels."""
    a, b = verts, np.roll(verts, -1, axis=0)
    ex, ey = b[:, 0] - a[:, 0], b[:, 1] - a[:, 1]
    wx, wy = px[..., None] - a[:, 0], py[..., None] - a[:, 1]
    t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
    dist = np.sqrt(np.min((wx - ex * t) ** 2 + (wy - ey * t) ** 2, axis=-1))
    # Crossing-number test for the sign (works for the non-convex star, cross and L).
    straddle = (a[:, 1] <= py[..., None]) != (b[:, 1] <= py[..., None])
    safe_ey = np.where(ey == 0, 1e-12, ey)
    x_cross = a[:, 0] + wy * ex / safe_ey
    inside = np.sum(straddle & (px[..., None] < x_cross), axis=-1) % 2 == 1
    return np.where(inside, -dist, dist)


def _shape_sdf(name: str, px: np.ndarray, py: np.ndarray, cx: float, cy: float, r: float, angle: float):
    if name == "circle":
        return np.hypot(px - cx, py - cy) - r
    if name == "ring":
        return np.abs(np.hypot(px - cx, py - cy) - 0.7 * r) - 0.3 * r
    c, s = np.cos(angle), np.sin(angle)
    verts = _POLYGONS[name] @ np.array([[c, s], [-s, c]]) * r + np.array([cx, cy])
    return _polygon_sdf(px, py, verts)


def _window(size: int, cx: float, cy: float, reach: float):
    """Pixel window around a shape (clipped to the image) and its pixel-centre coordinate grids."""
    x0, x1 = max(0, int(cx - reach - 1)), min(size, int(cx + reach + 2))
    y0, y1 = max(0, int(cy - reach - 1)), min(size, int(cy + reach + 2))
    py, px = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
    return (slice(y0, y1), slice(x0, x1)), px, py


def _paint(img: np.ndarray, win, d: np.ndarray, colour: np.ndarray) -> None:
    """Alpha-blend `colour` where the signed distance `d` is inside (1 px anti-aliased edge)."""
    alpha = np.clip(0.5 - d, 0.0, 1.0)[..., None]
    img[win] = img[win] * (1 - alpha) + colour * alpha


def _upsample_matrix(k: int, size: int) -> np.ndarray:
    """Bilinear interpolation matrix (size, k): a k-point grid stretched over `size` pixels."""
    pos = (np.arange(size) + 0.5) / size * (k - 1)
    lo = np.minimum(pos.astype(int), k - 2)
    frac = pos - lo
    m = np.zeros((size, k))
    m[np.arange(size), lo] = 1 - frac
    m[np.arange(size), lo + 1] = frac
    return m


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """A float image in [0,1]-ish: base colour, gradient, low-frequency noise and sometimes stripes."""
    yy, xx = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size
    c0, c1 = rng.uniform(0.0, 1.0, 3), rng.uniform(0.0, 1.0, 3)
    theta = rng.uniform(0, 2 * np.pi)
    ramp = (xx - 0.5) * np.cos(theta) + (yy - 0.5) * np.sin(theta) + 0.5
    img = c0 + (c1 - c0) * (rng.uniform(0.1, 0.6) * ramp)[..., None]
    k = int(rng.integers(3, 7))
    m = _upsample_matrix(k, size)
    grid = rng.normal(0.0, rng.uniform(0.03, 0.15), (k, k, 3))
    img = img + np.einsum("ik,jl,klc->ijc", m, m, grid)
    if rng.random() < 0.45:
        phi = rng.uniform(0, np.pi)
        freq = rng.uniform(2.0, 7.0)
        wave = np.sin(2 * np.pi * freq * (xx * np.cos(phi) + yy * np.sin(phi)) + rng.uniform(0, 2 * np.pi))
        img = img + (rng.uniform(0.04, 0.18) * wave)[..., None] * rng.uniform(-1, 1, 3)
    return img.astype(np.float32)


def _object_colour(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A colour lighter or darker than the background by a random step; sometimes low contrast.

    Contrast mostly in brightness keeps the shapes learnable in a few epochs; the hue varies freely.
    """
    mean = img.mean(axis=(0, 1))
    step = rng.uniform(0.1, 0.22) if rng.random() < LOW_CONTRAST_PROB else rng.uniform(0.25, 0.6)
    sign = 1.0 if rng.random() < 0.5 else -1.0
    if not 0.0 <= mean.mean() + sign * step <= 1.0:
        sign = -sign
    return np.clip(mean + sign * step + rng.normal(0.0, 0.12, 3), 0, 1)


def _distractor(img: np.ndarray, rng: np.random.Generator) -> None:
    """A small blob, a thin line or a partial arc: clutter that belongs to no class."""
    size = img.shape[0]
    cx, cy = rng.uniform(0, size, 2)
    colour = rng.uniform(0.0, 1.0, 3)
    kind = rng.integers(3)
    if kind == 0:  # small blob (an ellipse smaller than any object)
        ra, rb = rng.uniform(0.025, 0.06, 2) * size
        win, px, py = _window(size, cx, cy, max(ra, rb))
        d = (np.hypot((px - cx) / ra, (py - cy) / rb) - 1) * min(ra, rb)
    elif kind == 1:  # line segment with round caps
        half = rng.uniform(0.1, 0.25) * size
        ang = rng.uniform(0, np.pi)
        dx, dy = half * np.cos(ang), half * np.sin(ang)
        win, px, py = _window(size, cx, cy, half + 2)
        t = np.clip(((px - cx + dx) * dx + (py - cy + dy) * dy) / (2 * half * half), 0, 1)
        d = np.hypot(px - cx + dx - 2 * dx * t, py - cy + dy - 2 * dy * t) - rng.uniform(0.4, 1.1)
    else:  # arc: less than half a thin ring
        rad = rng.uniform(0.08, 0.18) * size
        ang = rng.uniform(0, 2 * np.pi)
        win, px, py = _window(size, cx, cy, rad + 2)
        ring = np.abs(np.hypot(px - cx, py - cy) - rad) - rng.uniform(0.4, 1.0)
        cut = (px - cx) * np.cos(ang) + (py - cy) * np.sin(ang) - rng.uniform(0.1, 0.6) * rad
        d = np.maximum(ring, -cut)
    _paint(img, win, d, colour)


def _draw_object(img: np.ndarray, name: str, cx: float, cy: float, r: float, rng: np.random.Generator):
    """Paint one shape with a random colour, rotation and a faint shading; return its signed distance."""
    size = img.shape[0]
    colour = _object_colour(img, rng)
    win, px, py = _window(size, cx, cy, r * 1.05)
    d = _shape_sdf(name, px, py, cx, cy, r, rng.uniform(0, 2 * np.pi))
    shade = rng.uniform(-0.12, 0.12) * ((px - cx) / max(r, 1.0))[..., None]
    _paint(img, win, d, np.clip(colour + shade, 0, 1))
    return win, d


def _finish(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add pixel noise and quantise to uint8."""
    img = img + rng.normal(0.0, rng.uniform(0.01, 0.06), img.shape)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def make_classification(
    n: int, image_size: int, num_classes: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """`n` images (n,H,W,3 uint8) with one shape each and their labels (n int64 in 0..C-1).

    Labels are balanced (counts differ by at most one) and shuffled.
    """
    names = class_names(num_classes)
    labels = rng.permutation(np.arange(n, dtype=np.int64) % num_classes)
    images = np.empty((n, image_size, image_size, 3), np.uint8)
    for i, label in enumerate(labels):
        img = _background(image_size, rng)
        for _ in range(rng.poisson(1.2)):
            _distractor(img, rng)
        r = rng.uniform(*CLS_RADIUS) * image_size
        cx, cy = rng.uniform(0.6 * r, image_size - 0.6 * r, 2)
        _draw_object(img, names[label], cx, cy, r, rng)
        if rng.random() < 0.3:  # clutter on top of the object too
            _distractor(img, rng)
        images[i] = _finish(img, rng)
    return images, labels


def make_scenes(
    n: int, scene_size: int, num_classes: int, max_objects: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """`n` scenes of 1..max_objects shapes, with segmentation masks and boxes of the visible parts.

    Returns `images` (n,S,S,3 uint8), `masks` (n,S,S uint8, 0 = background, 1..C = class; later
    objects occlude earlier ones), `boxes` (M,4 float32 xyxy pixels, x2/y2 exclusive), `box_labels`
    (M int64 in 1..C) and `box_image` (M int64). Objects with fewer than MIN_VISIBLE_PIXELS visible
    pixels get no box (their few pixels stay in the mask: it shows what is visible).
    """
    names = class_names(num_classes)
    s = scene_size
    images = np.empty((n, s, s, 3), np.uint8)
    masks = np.zeros((n, s, s), np.uint8)
    boxes, box_labels, box_image = [], [], []
    for i in range(n):
        img = _background(s, rng)
        for _ in range(int(rng.integers(2, 9))):
            _distractor(img, rng)
        inst = np.full((s, s), -1, np.int64)
        placed: list[tuple[float, float, float]] = []
        labels = rng.integers(1, num_classes + 1, int(rng.integers(1, max_objects + 1)))
        for k, label in enumerate(labels):
            r = rng.uniform(0.07, 0.2) * s
            for _ in range(10):  # prefer places that leave earlier objects mostly visible
                cx, cy = rng.uniform(0.5 * r, s - 0.5 * r, 2)
                if all(np.hypot(cx - x, cy - y) > 0.7 * (r + q) for x, y, q in placed):
                    break
            placed.append((cx, cy, r))
            win, d = _draw_object(img, names[label - 1], cx, cy, r, rng)
            inst[win][d <= 0] = k
            masks[i][win][d <= 0] = label
        for k, label in enumerate(labels):
            ys, xs = np.nonzero(inst == k)
            if len(ys) >= MIN_VISIBLE_PIXELS:
                boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
                box_labels.append(label)
                box_image.append(i)
        images[i] = _finish(img, rng)
    return {
        "images": images,
        "masks": masks,
        "boxes": np.array(boxes, np.float32).reshape(-1, 4),
        "box_labels": np.array(box_labels, np.int64),
        "box_image": np.array(box_image, np.int64),
    }
