"""params/paper.yaml: valid, consistent with the numbers its comments cite, and a DAG Snakemake can plan.

The file names data folders relative to the project (data/cifar10, data/VOCdevkit/VOC2012) and
validation insists they exist, so these tests run from a temp folder holding empty folders of the
right layout: the real file is checked unmodified, and the dry run reads no data.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nasstudy import cli
from nasstudy.config import PROJECT_ROOT, ParamsError, load_params

PAPER = PROJECT_ROOT / "params" / "paper.yaml"
# Jobs per rule (docs/paper-scale.md): 2 evolution methods x 4 generations, 3 spaces, 3 x 5 x 5 replicates
# searches and retrains, 3 x 20 ranking archs, 2 tasks x 3 spaces x 5 methods transferred.
EXPECTED_JOBS = {"init_space": 1, "prepare_data": 1, "evolve_space": 8, "warmup_supernet": 3, "search": 75,
                 "retrain": 75, "ranking_sample": 3, "ranking": 60, "transfer": 30, "report": 1}  # fmt: skip


@pytest.fixture()
def data_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """cwd = a folder with the data folders paper.yaml names (empty: nothing here reads them)."""
    (tmp_path / "data" / "cifar10" / "cifar-10-batches-py").mkdir(parents=True)
    voc = tmp_path / "data" / "VOCdevkit" / "VOC2012"
    for sub in ("Annotations", "JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_paper_params_validate_and_agree_with_their_sources(data_layout: Path) -> None:
    cfg = load_params(PAPER)
    space, nse, search = cfg["space"], cfg["evolution"]["nse"], cfg["search"]
    assert cfg["study"] == "paper" and cfg["data"]["source"] == "cifar10" and cfg["device"] == "cuda"
    assert cfg["evolution"]["generations"] == (len(space["pool"]) - 1) // (space["k"] - 1)  # NSE's rounds
    assert space["k"] == 5 and [s["channels"] for s in space["stages"]] == [16, 24, 40, 80, 96, 192, 320]
    assert (nse["flops_target"], nse["front_samples"], nse["lower_band_samples"]) == (3e8, 2000, 100)
    assert nse["flops_lambda"] == pytest.approx(1e-5 / 1e12)  # paper lambda with FLOPs in millions
    assert cfg["evolution"]["autospace"]["flops_target"] == 5e8 and cfg["evolution"]["autospace"]["k"] == 4
    assert search["budget"] == 1000 == search["relativenas"]["population"] * 50
    assert (
        search["relativenas"]["joint"]["steps"] == cfg["data"]["train"] // search["relativenas"]["joint"]["batch_size"]
    )
    weak = search["weaknas"]
    assert (weak["batch"], weak["top_m"], weak["mlp_layers"], weak["mlp_width"]) == (10, 100, 4, 1000)
    assert cfg["retrain"]["epochs"] == 600 and cfg["transfer"]["methods"] is None


def test_paper_params_need_their_data_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no data/ here: the check that guards real runs still fires
    with pytest.raises(ParamsError, match="data.root = 'data/cifar10' is not an existing folder"):
        load_params(PAPER)


def test_paper_study_dry_run_on_the_slurm_profile_lists_every_job(data_layout: Path) -> None:
    """`nasstudy run --params params/paper.yaml --profile slurm --dry-run`: the whole DAG, jobs per rule."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"}  # as a cluster run would have it
    out = subprocess.run(
        [sys.executable, "-m", "nasstudy.cli", "run", "--params", str(PAPER), "--profile", "slurm", "--dry-run",
         "--cores", "1"],
        cwd=data_layout, capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert cli.pending_jobs(out.stdout + out.stderr) == EXPECTED_JOBS
    assert not (data_layout / "results").exists()


def test_paper_params_file_says_where_every_value_comes_from() -> None:
    """Each `key: value` line carries a comment, or its parent key's line does (one comment per block)."""
    lines = [ln for ln in PAPER.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    undocumented = []
    for i, line in enumerate(lines):
        key, _, value = line.partition(":")
        if not value.strip() or value.strip().startswith("#") or line.lstrip().startswith(("-", "mb")):
            continue  # a section header, a list item or a continued list
        indent = len(line) - len(line.lstrip())
        parent = next((p for p in reversed(lines[:i]) if len(p) - len(p.lstrip()) < indent), "")
        if "#" not in line and "#" not in parent:
            undocumented.append(key.strip())
    assert undocumented == []
