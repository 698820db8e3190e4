"""The SLURM profile against a real SLURM: the tiny study submitted job by job with sbatch to a one-node
cluster started here (tests/helpers/slurm_cluster.py), checked against the local run byte for byte.

The cluster test installs Debian's SLURM packages when they are missing (root + apt-get), and skips
with the exact reason where SLURM cannot be installed or started. The dry runs below need no cluster:
they check the profile's per-rule resources and the `nasstudy run --profile slurm` warning.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from helpers.e2e import (
    BIN,
    ROOT,
    make_project,
    metrics_files,
    mlflow_server,
    planned_jobs,
    search_only_transferred_methods,
)
from helpers.slurm_cluster import SlurmCluster, SlurmStartError, ensure_slurm

PROFILE = ROOT / "workflow" / "profiles" / "slurm" / "config.yaml"
GPU_RULES = {"evolve_space", "warmup_supernet", "search", "retrain", "ranking_sample", "ranking", "transfer"}
LOCAL_RULES = {"init_space"}  # `localrule: True`: runs in the submitting Snakemake process, not through sbatch


def dry_run_resources(text: str) -> dict[str, set[str]]:
    """rule -> the distinct `resources:` lines of its jobs in a Snakemake dry run."""
    found: dict[str, set[str]] = {}
    rule = None
    for line in text.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):", line):
            rule = m.group(1)
        elif rule and (m := re.match(r"^\s+resources: (.*)$", line)):
            found.setdefault(rule, set()).add(m.group(1))
    return found


def test_profile_gives_training_rules_a_gpu_and_every_rule_a_time_limit(tmp_path: Path) -> None:
    """A dry run with the profile as the executor sees it (no cluster needed): the resources per rule."""
    project = make_project(tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "--dry-run", "--workflow-profile", "workflow/profiles/slurm"],
        cwd=project, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    resources = dry_run_resources(out.stdout + out.stderr)
    assert set(resources) >= GPU_RULES | {"prepare_data", "report"}
    for rule, lines in resources.items():
        for line in lines:
            res = dict(kv.split("=", 1) for kv in line.split(", "))
            assert int(res["runtime"]) > 0 and int(res["mem_mb"]) > 0 and int(res["cpus_per_task"]) > 0, rule
            assert (res.get("gpu") == "1") == (rule in GPU_RULES), (rule, line)


def nasstudy_dry_run(cwd: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run(
        [sys.executable, "-m", "nasstudy.cli", "run", "--profile", "slurm", "--dry-run", "--cores", "1"],
        cwd=cwd, capture_output=True, text=True, env={**clean, **env},
    )  # fmt: skip


def test_nasstudy_run_profile_slurm_warns_once_about_sqlite(tmp_path: Path) -> None:
    local = nasstudy_dry_run(tmp_path)
    assert local.returncode == 0, local.stderr[-3000:]
    warnings = [ln for ln in local.stderr.splitlines() if "warning" in ln.lower() and "sqlite" in ln.lower()]
    assert len(warnings) == 1 and "MLFLOW_TRACKING_URI" in warnings[0], local.stderr[-3000:]
    assert "rule search:" in local.stdout + local.stderr  # the profile was used for a whole dry run
    served = nasstudy_dry_run(tmp_path, MLFLOW_TRACKING_URI="http://127.0.0.1:5000")
    assert served.returncode == 0 and "sqlite" not in served.stderr.lower(), served.stderr[-3000:]


# --- a real SLURM cluster ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[SlurmCluster]:
    """A one-node SLURM cluster for this module, stopped (every daemon, by PID) at the end."""
    reason = ensure_slurm()
    if reason:
        pytest.skip(reason)
    # Directly under /tmp, not in pytest's 0700 tmp folders: munged wants a socket path anyone can traverse.
    root = Path(tempfile.mkdtemp(prefix="nasstudy-slurm-"))
    slurm = SlurmCluster(root, min_job_age=3600)
    try:
        try:
            slurm.start()
        except (SlurmStartError, OSError, subprocess.SubprocessError) as e:
            pytest.skip(f"SLURM does not start here: {e}")
        yield slurm
    finally:
        slurm.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` on a free local port, as docs/cluster.md asks for: jobs log over HTTP, not to SQLite."""
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as uri:
        yield uri


def fit_profile_to_node(project: Path) -> None:
    """The project's SLURM profile with every rule's CPUs and memory cut to what the 2-core test node has;
    the rules, GPU requests, runtimes and every other setting stay. Status polling starts after 1 s
    (squeue: the test cluster has no accounting database)."""
    path = project / "workflow" / "profiles" / "slurm" / "config.yaml"
    profile = yaml.safe_load(path.read_text())
    for res in (profile["default-resources"], *profile["set-resources"].values()):
        res.update(cpus_per_task=1, mem_mb=1000)
        for site_key in ("slurm_partition", "slurm_account"):
            res.pop(site_key, None)
    profile.update(
        {"slurm-init-seconds-before-status-checks": 1, "slurm-status-command": "squeue", "slurm-no-account": True}
    )
    path.write_text(yaml.safe_dump(profile, sort_keys=False))


@pytest.mark.slow
def test_tiny_study_on_slurm_equals_the_local_run(
    cluster: SlurmCluster, tracking_server: str, study: Path, tmp_path: Path
) -> None:
    """`snakemake --workflow-profile workflow/profiles/slurm` (what `nasstudy run --profile slurm` runs):
    every non-local job goes through sbatch + srun; metrics byte-identical to the local run (`study`)."""
    from mlflow.tracking import MlflowClient

    project = make_project(tmp_path)
    fit_profile_to_node(project)
    search_only_transferred_methods(project)  # 29 jobs, not 41: each waits for SLURM's status polls
    planned = planned_jobs(project)  # (rule, wildcards) of every job but `all`
    # Jobs import the project copy's package (sbatch passes the environment on), so code edits in the
    # working tree during the run cannot change the code hashes that jobs re-derive on their nodes.
    env = {**cluster.env, "MLFLOW_TRACKING_URI": tracking_server, "PYTHONPATH": str(project / "src")}
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "--workflow-profile", "workflow/profiles/slurm"],
        cwd=project, capture_output=True, text=True, env=env,
    )  # fmt: skip
    seconds = time.monotonic() - start
    assert out.returncode == 0, out.stderr[-5000:] + "\n" + cluster.logs()
    print(f"tiny study on SLURM: {seconds:.0f} s")

    # SLURM ran the jobs: one COMPLETED sbatch job per non-local job, GPUs where the profile asks.
    fields = "JobID:20,State:20,Comment:200,tres-per-job:50"  # comment: rule_<name>[_wildcards_<values>]
    queue = subprocess.run(["squeue", "-h", "--states=all", "-O", fields], capture_output=True, text=True, env=env)
    jobs = [line.split() for line in queue.stdout.splitlines()]
    submitted = [s for s in out.stderr.splitlines() if "has been submitted with SLURM jobid" in s]
    assert len(jobs) == len(submitted) == sum(rule not in LOCAL_RULES for rule, _ in planned), queue.stdout
    assert {state for _, state, _, _ in jobs} == {"COMPLETED"}, queue.stdout
    for _, _, comment, gres in jobs:  # gres: gres:gpu:1 (sbatch --gpus=1) or N/A
        rule = re.match(r"rule_([a-z_]+?)(?:_wildcards_.*)?$", comment).group(1)
        assert ("gpu" in gres) == (rule in GPU_RULES), (comment, gres)

    first, again = metrics_files(study), metrics_files(project)
    assert len(again) >= 16 and again.keys() < first.keys()
    assert [k for k in again if first[k] != again[k]] == []

    # MLflow: every job logged over HTTP from its SLURM job, under one parent; no SQLite file in the project.
    assert not (project / "mlflow.db").exists()
    client = MlflowClient(tracking_uri=tracking_server)
    runs = client.search_runs([client.get_experiment_by_name("nasstudy").experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("nasstudy.role") == "study"]
    children = [r for r in runs if r.data.tags.get("nasstudy.role") == "job"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == len(planned) and {r.info.status for r in children} == {"FINISHED"}  # each job once

    # DVC: the submitting host's onsuccess hook wrote dvc.lock once, at the end; it matches the files.
    assert (project / "dvc.lock").is_file()
    status = subprocess.run([BIN / "dvc", "status", "--json"], cwd=project, capture_output=True, text=True)
    assert status.returncode == 0 and json.loads(status.stdout) == {}, status.stdout
