"""What the Snakefile needs beside its rules: the params a stage sees, code hashes for staleness,
and the hooks that open the study's MLflow parent run and record finished work in DVC."""

from __future__ import annotations

import copy
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import yaml

from nasstudy.config import PROJECT_ROOT

PACKAGE_ROOT = Path(__file__).resolve().parent
COMMON_CODE = ("utils.py", "tracking.py", "checkpoint.py")


def stage_params(config: dict, *sections: str, **extra: object) -> dict:
    """Seed, study, device, amp and threads plus only the named sections, so that an unrelated change
    to the params does not rerun the stage. `space` also gets the data's image size and classes."""
    params = {k: config[k] for k in ("seed", "study", "device", "amp", "threads") if k in config}  # bench: no amp
    for name in sections:
        params[name] = copy.deepcopy(config[name])
    params.update(copy.deepcopy(extra))
    if "space" in params and "data" in config:
        params["space"]["image_size"] = config["data"]["image_size"]
        params["space"]["num_classes"] = config["data"]["num_classes"]
    return sorted_keys(params)


def sorted_keys(obj: object) -> object:
    """Mappings with their keys sorted, recursively: Snakemake compares params as text, so the
    order of keys in a params file must not decide whether a job reruns."""
    if isinstance(obj, dict):
        return {k: sorted_keys(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list):
        return [sorted_keys(v) for v in obj]
    return obj


def code_hash(*paths: str) -> str:
    """A short hash of the package files under `paths` (files or folders, relative to src/nasstudy)."""
    h = hashlib.sha256()
    for rel in (*COMMON_CODE, *paths):
        target = PACKAGE_ROOT / rel
        files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
        for f in files:
            if f.is_file():
                h.update(str(f.relative_to(PACKAGE_ROOT)).encode())
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


def on_start(config: dict) -> None:
    """Open (or find) the study's MLflow parent run once, serially, before any job starts.
    An unreachable tracking server (with `tracking.required`) stops here with one line, not
    minutes later inside every job's MLflow retries."""
    from nasstudy import mlflow_tracking

    try:
        mlflow_tracking.ensure_study_run(config)
    except mlflow_tracking.TrackingUnavailable as e:
        print(f"tracking error: {e}", file=sys.stderr)
        raise SystemExit(1) from None


def on_finish(config: dict, success: bool) -> None:
    """Close the parent run and record every phase whose outputs exist in dvc.lock, after a failed run
    too: what finished is recorded (a failed job's outputs are already gone, Snakemake removes them)."""
    from nasstudy import mlflow_tracking
    from nasstudy.checkpoint import clear_finished

    try:
        mlflow_tracking.finish_study_run(config, success)
    finally:
        dvc_commit(config)
        if success:  # every job of this run is recorded: their last checkpoints are no longer needed
            clear_finished(config["study"])


def dvc_stages_for(study: str, workdir: Path) -> list[str]:
    """The dvc.yaml stages whose outputs belong to `study` and all exist (those can be committed)."""
    dvc_yaml = workdir / "dvc.yaml"
    if not dvc_yaml.is_file():
        return []
    stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {})
    names = []
    for name, stage in stages.items():
        outs = [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", [])]
        if outs and all(o.startswith(f"results/{study}/") and (workdir / o).exists() for o in outs):
            names.append(name)
    return names


def dvc_executable() -> str:
    """The `dvc` beside this Python (the project's venv), else whatever `dvc` is on PATH."""
    dvc = Path(sys.executable).with_name("dvc")
    return str(dvc) if dvc.exists() else "dvc"


def dvc_commit(config: dict, workdir: Path | None = None) -> None:
    """`dvc commit` the finished phases so that dvc.lock holds their hashes and `dvc status` is clean.
    Skipped inside `dvc repro` (which records by itself) and where the folder is no DVC repo."""
    workdir = Path(workdir or os.getcwd())
    if os.environ.get("NASSTUDY_NO_DVC") or not (workdir / ".dvc").is_dir():
        return
    names = dvc_stages_for(config["study"], workdir)
    if not names:
        return
    cmd = [dvc_executable(), "commit", "--force", "--quiet", *names]
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if result.returncode != 0:
        detail = (result.stderr.strip() or result.stdout.strip() or f"exit code {result.returncode}").splitlines()[-1]
        print(f"warning: dvc commit failed ({detail}); `dvc commit` records the phases by hand", file=sys.stderr)


__all__ = ["PROJECT_ROOT", "stage_params", "code_hash", "on_start", "on_finish", "dvc_commit"]
