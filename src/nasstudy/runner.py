"""Runs one stage for one Snakemake job: the job's log file, its MLflow child run, its seed.

Every rule calls workflow/scripts/run_stage.py, which hands its `snakemake` object here; the
stage module does the work through its `run(...)` function: the one the rule names in its `stage`
param (the benchmark rules: `nasstudy.benchmarks.<name>`), else `nasstudy.stages.<rule>` (the study's
rules, where the rule's name is its module's).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import resource
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


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (a forked worker counts from its fork)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def stage_module(rule: str, params: object) -> str:
    """The module that runs rule `rule`: its `stage` param where it has one, else nasstudy.stages.<rule>."""
    return getattr(params, "stage", None) or f"nasstudy.stages.{rule}"


def run_job(smk) -> None:
    """Call the rule's stage module's `run` with the job's files, params and wildcards, tracked in MLflow."""
    from nasstudy import mlflow_tracking
    from nasstudy.checkpoint import job_checkpoint
    from nasstudy.run_guard import error_line, stop_on_signal

    stop_on_signal()
    if smk.log:
        redirect_output(smk.log[0])
    rule = smk.rule
    inputs, outputs = named(smk.input), named(smk.output)
    wildcards = {k: str(v) for k, v in smk.wildcards.items()}
    params = smk.params.cfg
    stage = importlib.import_module(stage_module(rule, smk.params))
    forked = os.environ.get("NASSTUDY_FORKED_FROM")  # nasstudy.zygote's worker
    print(f"[nasstudy] {rule} {wildcards} starting" + (f" (forked from {forked})" if forked else ""), flush=True)
    # Every job notes its start (the crash drill reads it); long ones also get their checkpoint.
    code = getattr(smk.params, "code", "")
    resumable = "checkpoint" in inspect.signature(stage.run).parameters
    checkpoint = job_checkpoint(smk.config["study"], rule, wildcards, params, code, as_lists(inputs), resumable)
    checkpoint.event("start")
    extra = {"checkpoint": checkpoint} if resumable else {}
    start, tracker = time.perf_counter(), None
    try:
        tracker = mlflow_tracking.start_job_run(smk.config, rule, wildcards, params, as_lists(inputs))
        stage.run(inputs, outputs, params, wildcards, tracker, **extra)
    except BaseException as exc:
        traceback.print_exc()
        print(error_line(rule, wildcards, exc), flush=True)  # `nasstudy run` repeats it at the end
        if tracker is not None:
            with contextlib.suppress(Exception):
                mlflow_tracking.end_job_run(tracker, as_lists(outputs), success=False)
        raise
    tracker.log_metric("wall_seconds", time.perf_counter() - start)
    tracker.log_metric("cpu_seconds", cpu_seconds())
    if checkpoint.resumed_from is not None:  # lineage: this run continued an earlier, killed one
        mlflow_tracking.set_tags(tracker.client, tracker.run_id, {"nasstudy.resumed_from": checkpoint.resumed_from})
    mlflow_tracking.end_job_run(tracker, as_lists(outputs), success=True)
    checkpoint.done()
    print(f"[nasstudy] {rule} {wildcards} done in {time.perf_counter() - start:.1f}s, "
          f"process cpu {cpu_seconds():.2f}s", flush=True)  # fmt: skip
