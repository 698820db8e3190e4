"""Runs one stage for one Snakemake job: the job's log file, its MLflow child run, its seed.

Every rule calls workflow/scripts/run_stage.py, which hands its `snakemake` object here; the
stage module `nasstudy.stages.<rule>` does the work through its `run(...)` function.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import time
import traceback
from pathlib import Path


def named(files) -> dict[str, Path | list[Path]]:
    """Snakemake's named inputs/outputs as paths; a named list (from expand) stays a list."""
    return {k: [Path(x) for x in v] if isinstance(v, list) else Path(v) for k, v in files.items()}


def as_lists(files: dict[str, Path | list[Path]]) -> dict[str, list[Path]]:
    return {k: v if isinstance(v, list) else [v] for k, v in files.items()}


def redirect_output(log_path: str | Path) -> None:
    """Send this process's stdout and stderr (Python and C level) to the job's log file."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)


def run_job(smk) -> None:
    """Call `nasstudy.stages.<rule>.run` with the job's files, params and wildcards, tracked in MLflow."""
    from nasstudy import mlflow_tracking
    from nasstudy.checkpoint import job_checkpoint

    if smk.log:
        redirect_output(smk.log[0])
    rule = smk.rule
    inputs, outputs = named(smk.input), named(smk.output)
    wildcards = {k: str(v) for k, v in smk.wildcards.items()}
    params = smk.params.cfg
    stage = importlib.import_module(f"nasstudy.stages.{rule}")
    print(f"[nasstudy] {rule} {wildcards} starting", flush=True)
    extra = {}
    if "checkpoint" in inspect.signature(stage.run).parameters:
        code = getattr(smk.params, "code", "")
        checkpoint = job_checkpoint(smk.config["study"], rule, wildcards, params, code, as_lists(inputs))
        checkpoint.event("start")
        extra["checkpoint"] = checkpoint
    tracker = mlflow_tracking.start_job_run(smk.config, rule, wildcards, params, as_lists(inputs))
    start = time.perf_counter()
    try:
        stage.run(inputs, outputs, params, wildcards, tracker, **extra)
    except BaseException:
        traceback.print_exc()
        mlflow_tracking.end_job_run(tracker, as_lists(outputs), success=False)
        raise
    tracker.log_metric("wall_seconds", time.perf_counter() - start)
    mlflow_tracking.end_job_run(tracker, as_lists(outputs), success=True)
    if "checkpoint" in extra:
        extra["checkpoint"].clear()
    print(f"[nasstudy] {rule} {wildcards} done in {time.perf_counter() - start:.1f}s", flush=True)
