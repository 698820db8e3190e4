"""Tiny, seeded inputs for stage tests: a fresh supernet and three classification splits on disk, and
a search + retrain of one replicate run through the stage functions (tests/test_replicates.py,
tests/test_ranking.py). Imports only what the stages had before replicates existed, so the same
code computes golden digests on an older checkout."""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

import numpy as np
import torch

from nasstudy.spaces.mobile import Supernet, initial_state
from nasstudy.stages import retrain, search
from nasstudy.tracking import MemoryTracker
from nasstudy.training import save_model_file

# The tiny `mobile` space the stage tests share (conftest's `tiny_mobile` fixture gives a copy): 3 positions,
# 2 of 3 ops each. Tests that need other sizes keep their own config and say why.
SPACE_CFG = {
    "name": "mobile",
    "stem_channels": 8,
    "stages": [{"channels": 8, "positions": 1, "stride": 1}, {"channels": 16, "positions": 2, "stride": 2}],
    "head_channels": 16,
    "pool": ["mb3_e1", "mb3_e3", "mb5_e1"],
    "k": 2,
    "image_size": 16,
    "num_classes": 3,
}
SUPERNET = {"bn_recal_batches": 2, "batch_size": 16}
RETRAIN = {"epochs": 1, "batch_size": 16, "lr": 0.05, "momentum": 0.9, "weight_decay": 4.0e-5, "latency_batches": 2}
KNOBS = {
    "random": {},
    "rea": {"population": 4, "tournament": 2},
    "weaknas": {"initial": 4, "batch": 2, "top_m": 10, "candidates": 64, "mlp_epochs": 5},
    "ganas": {"initial": 4, "batch": 2, "top_k": 2, "samples": 4},
    "relativenas": {
        "population": 4,
        "compare": "acc",
        "joint": {"steps": 1, "batch_size": 16, "lr": 0.05, "lr_min": 0.001, "momentum": 0.9, "weight_decay": 0.0},
    },
}
BUDGET = 8


def make_inputs(root: Path) -> dict[str, Path]:
    """supernet.pt (weights from torch seed 0) and cls_{train,val,test}.npz of learnable noise images."""
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    active = [p["active"] for p in initial_state(SPACE_CFG)["positions"]]
    save_model_file(Supernet(SPACE_CFG, active).to_model_file(), root / "supernet.pt")
    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("val", 32), ("test", 32)):
        labels = rng.integers(0, 3, size=n)
        images = rng.integers(0, 120, size=(n, 16, 16, 3))
        images[np.arange(n), :, :, labels] += 120  # the dominant colour is the label
        np.savez(root / f"cls_{split}.npz", images=images.astype(np.uint8), labels=labels.astype(np.int64))
    return {
        "supernet": root / "supernet.pt",
        **{f"cls_{s}": root / f"cls_{s}.npz" for s in ("train", "val", "test")},
    }


def search_and_retrain(inputs: dict[str, Path], out: Path, method: str, wildcards: dict[str, str]) -> dict[str, Path]:
    """One search (BUDGET queries) and the retrain of its winner, as the two jobs of one replicate run."""
    torch.set_num_threads(1)
    base = {"seed": 0, "study": "t", "device": "cpu", "threads": 1, "space": SPACE_CFG}
    wildcards = {"space": "initial", "method": method, **wildcards}
    s_out = {k: out / "search" / f"{k}.{ext}" for k, ext in (("history", "csv"), ("best", "json"))}
    s_out |= {"state": out / "search" / "state.json", "metrics": out / "search" / "metrics.json"}
    params = {**base, "supernet": SUPERNET, "search": {"budget": BUDGET, method: KNOBS[method]}}
    search.run({k: inputs[k] for k in ("cls_train", "cls_val", "supernet")}, s_out, params, wildcards, MemoryTracker())
    r_in = {k: inputs[k] for k in ("cls_train", "cls_val", "cls_test")} | {"best": s_out["best"]}
    r_out = {k: out / "retrain" / f"{k}.{ext}" for k, ext in (("model", "pt"), ("metrics", "json"), ("timing", "json"))}
    r_out["curve"] = out / "retrain" / "curve.csv"
    retrain.run(r_in, r_out, {**base, "retrain": RETRAIN}, wildcards, MemoryTracker())
    return {"search_metrics": s_out["metrics"], "search_history": s_out["history"], "retrain_metrics": r_out["metrics"]}


def digests(files: dict[str, Path]) -> dict[str, str]:
    """md5 of each file; history.csv's `loss` column rounded to 4 decimals first: its last bits
    depend on the CPU's kernels (RelativeNAS's jointly trained weights gave another last digit on
    an AVX-512/AMX machine than where the golden values were made), while acc, FLOPs and params are exact."""
    return {k: hashlib.md5(_history_rounded(p) if k == "search_history" else p.read_bytes()).hexdigest()
            for k, p in files.items()}  # fmt: skip


def _history_rounded(path: Path) -> bytes:
    rows = list(csv.reader(io.StringIO(path.read_text())))
    col = rows[0].index("loss")
    for row in rows[1:]:
        row[col] = f"{float(row[col]):.4f}"
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue().encode()


if __name__ == "__main__":  # print the digests of replicate 0 on this checkout: the golden values
    import json
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        ins = make_inputs(Path(tmp) / "in")
        out = {m: digests(search_and_retrain(ins, Path(tmp) / m, m, {})) for m in KNOBS}
    json.dump(out, sys.stdout, indent=1)
