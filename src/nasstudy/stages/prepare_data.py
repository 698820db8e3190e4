"""prepare_data: make the classification splits and detection/segmentation scenes every later stage reads.

Outputs are byte-identical across runs: each split draws from its own seeded stream, the npz files are
written with fixed zip timestamps, and the preview PNG carries no software/date metadata.
"""

from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nasstudy.data.sources import Split, classification_splits, scene_splits
from nasstudy.tracking import Tracker
from nasstudy.utils import atomic_write_bytes, save_png, write_json

STAGE = "prepare_data"
SCENE_SPLITS = ("scenes_train", "scenes_val")


def write_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """Write an uncompressed .npz (loadable by `np.load`) atomically and deterministically.

    `np.savez` stamps each zip entry with the current time, so two runs differ; here every entry gets
    the same fixed date and the arrays go in the order given.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr in arrays.items():
            entry = io.BytesIO()
            np.lib.format.write_array(entry, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, entry.getvalue())
    atomic_write_bytes(path, buf.getvalue())


def generate(params: dict) -> tuple[dict[str, Split], dict[str, dict], list[str], list[str]]:
    """All splits as arrays: ({cls split: (images, labels)}, {scene split: scene dict}, class names,
    scene class names)."""
    with tqdm(total=2, desc=STAGE, file=sys.stderr, mininterval=5) as bar:
        cls, names = classification_splits(params["data"], params["seed"])
        bar.update()
        scenes, scene_names = scene_splits(params["data"], params["seed"])
        bar.update()
    return cls, scenes, names, scene_names


def summarise(params: dict, cls: dict, scenes: dict, names: list[str], scene_names: list[str]) -> dict:
    """Counts, sizes and per-class balance: what a person checks before trusting the data."""
    data = params["data"]
    out: dict = {
        "source": data["source"],
        "scene_source": data["scene_source"],
        "seed": params["seed"],
        "class_names": names,
        "num_classes": len(names),
        "scene_class_names": scene_names,
        "image_size": int(data["image_size"]),
        "scene_size": int(data["scene_size"]),
        "max_objects": int(data["max_objects"]),
        "splits": {},
    }
    for key, (_, labels) in cls.items():
        counts = np.bincount(labels, minlength=len(names))
        out["splits"][key] = {"count": len(labels), "per_class": dict(zip(names, counts.tolist()))}
    train = cls["cls_train"][0].reshape(-1, 3).astype(np.float64) / 255
    out["pixel_mean"] = [round(float(v), 6) for v in train.mean(axis=0)] if len(train) else [0.0] * 3
    out["pixel_std"] = [round(float(v), 6) for v in train.std(axis=0)] if len(train) else [0.0] * 3
    for key, sc in scenes.items():
        n = len(sc["images"])
        per_scene = np.bincount(sc["box_image"], minlength=n)
        counts = np.bincount(sc["box_labels"], minlength=len(scene_names) + 1)[1:]
        out["splits"][key] = {
            "count": n,
            "boxes": len(sc["boxes"]),
            "per_class": dict(zip(scene_names, counts.tolist())),
            "objects_per_scene": {
                "min": int(per_scene.min()) if n else 0,
                "max": int(per_scene.max()) if n else 0,
                "mean": round(float(per_scene.mean()), 4) if n else 0.0,
            },
            "foreground_fraction": round(float((sc["masks"] > 0).mean()), 6) if n else 0.0,
        }
    return out


def write_preview(
    path: str | Path, names: list[str], cls: tuple, scenes: dict, scene_names: list[str], n_cls: int = 24
) -> None:
    """A PNG grid: labelled classification samples on top, scenes with masks and boxes below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Rectangle

    images, labels = cls
    n_cls = min(n_cls, len(images))
    n_sc = min(4, len(scenes["images"]))
    cols = 8
    rows = -(-n_cls // cols) + (2 if n_sc else 0)
    fig = plt.figure(figsize=(cols * 1.2, max(rows, 1) * 1.3), dpi=100)
    grid = fig.add_gridspec(max(rows, 1), cols)
    for i in range(n_cls):
        ax = fig.add_subplot(grid[i // cols, i % cols])
        ax.imshow(images[i], interpolation="nearest")
        ax.set_title(names[labels[i]], fontsize=7)
        ax.axis("off")
    colours = plt.get_cmap("tab10")(np.arange(10))
    cmap = ListedColormap(np.vstack([[0, 0, 0, 0], colours[: len(scene_names)]]))
    top = -(-n_cls // cols)
    for j in range(n_sc):
        ax = fig.add_subplot(grid[top : top + 2, 2 * j : 2 * j + 2])
        ax.imshow(scenes["images"][j], interpolation="nearest")
        ax.imshow(scenes["masks"][j], cmap=cmap, vmin=0, vmax=len(scene_names), alpha=0.35, interpolation="nearest")
        for b, lab in zip(scenes["boxes"][scenes["box_image"] == j], scenes["box_labels"][scenes["box_image"] == j]):
            colour = colours[(lab - 1) % 10]
            ax.add_patch(Rectangle((b[0] - 0.5, b[1] - 0.5), b[2] - b[0], b[3] - b[1], fill=False, lw=1, ec=colour))
            ax.text(b[0], b[1] - 1, scene_names[lab - 1], fontsize=6, color=colour, va="bottom")
        ax.axis("off")
    fig.tight_layout()
    save_png(fig, path, dpi=100)
    plt.close(fig)


def run(
    inputs: dict[str, Path], outputs: dict[str, Path], params: dict, wildcards: dict[str, str], tracker: Tracker
) -> None:
    """Generate every split, write the npz files, summary.json and preview.png, and log the counts."""
    cls, scenes, names, scene_names = generate(params)
    for key, (images, labels) in cls.items():
        write_npz(outputs[key], images=images, labels=labels)
    for key, sc in scenes.items():
        arrays = {k: sc[k] for k in ("images", "masks", "boxes", "box_labels", "box_image")}
        write_npz(outputs[key], **arrays, class_names=np.asarray(scene_names, dtype=str))
    summary = summarise(params, cls, scenes, names, scene_names)
    write_json(outputs["summary"], summary)
    write_preview(
        outputs["preview"],
        summary["class_names"],
        cls["cls_train"],
        scenes["scenes_train"],
        summary["scene_class_names"],
    )
    metrics = {f"{key}_count": float(v["count"]) for key, v in summary["splits"].items()}
    for key in SCENE_SPLITS:
        metrics[f"{key}_boxes"] = float(summary["splits"][key]["boxes"])
        metrics[f"{key}_objects_mean"] = summary["splits"][key]["objects_per_scene"]["mean"]
    tracker.log_metrics(metrics)
    tracker.log_artifact(outputs["summary"])
    tracker.log_artifact(outputs["preview"])
