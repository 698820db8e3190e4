"""Ranking sample: how well a supernet ranks archs, measured on archs no search selected.

The search winners are a biased, range-restricted sample for rank correlations (every winner has a
high supernet accuracy), so each space also gets a fixed, seeded sample of uniformly drawn archs:
rule `ranking_sample` scores them with the space's supernet exactly as search does (BN
recalibration on the same train batches, accuracy on the val split), and rule `ranking` trains each
from scratch exactly as the retrain stage trains a winner (nasstudy.stages.retrain's code and params).
The report correlates the two.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from nasstudy.checkpoint import NO_CHECKPOINT, Checkpoint
from nasstudy.evaluators import SupernetEvaluator
from nasstudy.methods.base import Arch
from nasstudy.spaces.mobile import MobileSpace
from nasstudy.stages.retrain import train_arch, write_results
from nasstudy.tracking import Tracker
from nasstudy.utils import atomic_write_bytes, make_rng, seed_torch

SAMPLE_STAGE = "ranking_sample"
STAGE = "ranking"
SAMPLE_COLUMNS = ["index", "arch", "ops", "supernet_acc", "supernet_loss", "flops", "params"]


def draw_archs(space: MobileSpace, count: int, rng: np.random.Generator) -> list[Arch]:
    """`count` distinct archs drawn uniformly from `space` (a repeat is drawn again: each arch is
    retrained once). A space with fewer archs than `count` is an error naming both."""
    size = 2 ** len(space.decision_sizes)
    if count > size:
        raise ValueError(f"ranking.sample = {count} is more than the {size} archs of this space")
    archs: list[Arch] = []
    seen: set[Arch] = set()
    while len(archs) < count:
        arch = space.sample(rng)
        if arch not in seen:
            seen.add(arch)
            archs.append(arch)
    return archs


def run_sample(
    inputs: dict[str, Path],
    outputs: dict[str, Path],
    params: dict,
    wildcards: dict[str, str],
    tracker: Tracker,
) -> None:
    """Inputs cls_train, cls_val, supernet; output sample (sample.csv, one row per arch)."""
    space_name = wildcards["space"]
    seed, count = int(params["seed"]), int(params["ranking"]["sample"])
    seed_torch(seed, SAMPLE_STAGE, space_name, threads=int(params["threads"]))
    evaluator = SupernetEvaluator.for_stage(inputs, params)
    space = evaluator.space
    rows = []
    for index, arch in enumerate(draw_archs(space, count, make_rng(seed, SAMPLE_STAGE, space_name))):
        m = evaluator.evaluate(arch)
        ops = json.dumps([list(o) for o in space.ops(arch)])
        rows.append([index, space.to_string(arch), ops, m["acc"], m["loss"], m["flops"], m["params"]])
        tracker.log_metric("supernet_acc", m["acc"], step=index)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(SAMPLE_COLUMNS)
    writer.writerows(rows)
    atomic_write_bytes(outputs["sample"], buf.getvalue().encode())
    tracker.log_artifact(outputs["sample"])


def read_sample(path: str | Path) -> list[dict]:
    """The rows of a sample.csv, with `ops` parsed back from its JSON text."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and list(rows[0]) != SAMPLE_COLUMNS:
        raise ValueError(f"{path} has columns {list(rows[0])}, expected {SAMPLE_COLUMNS}")
    return [{**r, "index": int(r["index"]), "ops": json.loads(r["ops"])} for r in rows]


def run(
    inputs: dict[str, Path],
    outputs: dict[str, Path],
    params: dict,
    wildcards: dict[str, str],
    tracker: Tracker,
    checkpoint: Checkpoint = NO_CHECKPOINT,
) -> None:
    """Inputs cls_train, cls_val, cls_test, sample; outputs metrics, timing, curve of arch `index`
    of the sample, trained from scratch with the retrain params; checkpoints after every epoch."""
    space_name, index = wildcards["space"], int(wildcards["index"])
    rows = {r["index"]: r for r in read_sample(inputs["sample"])}
    if index not in rows:
        raise ValueError(f"{inputs['sample']} has no arch {index} (it holds {len(rows)}); rerun ranking_sample")
    row = rows[index]
    names = [STAGE, space_name, index]
    trained = train_arch(inputs, params, names, row["ops"], row["arch"], tracker, checkpoint)
    write_results(outputs, params, trained, row["arch"], float(row["supernet_acc"]), tracker)
