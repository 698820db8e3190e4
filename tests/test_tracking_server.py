"""A real `mlflow server`: the tiny study logs its parent run and one child run per job to it over HTTP,
and a study whose server does not answer stops before any job runs."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from helpers.e2e import BIN, free_port, make_project, mlflow_server, planned_jobs, snakemake


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[str]:
    with mlflow_server(tmp_path) as uri:
        yield uri


def overlay(project: Path, **tracking: object) -> Path:
    path = project / "params" / "tracking.yaml"
    path.write_text(yaml.safe_dump({"tracking": tracking}))
    return path


@pytest.mark.slow
def test_tiny_study_logs_to_a_real_tracking_server(server: str, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    (tmp_path / "project").mkdir()  # beside the server's own files
    project = make_project(tmp_path / "project")
    params = overlay(project, uri=server)
    target = "results/default/retrain/nse/random/rep0/model.pt"  # its chain: every kind of job up to retrain
    jobs = planned_jobs(project, target)
    out = snakemake(project, target, "--configfile", str(params))  # --configfile takes every later word
    assert out.returncode == 0, out.stderr[-4000:]
    assert not (project / "mlflow.db").exists()  # everything went to the server

    client = MlflowClient(tracking_uri=server)
    exp = client.get_experiment_by_name("nasstudy")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("nasstudy.role") == "study"]
    children = [r for r in runs if r.data.tags.get("nasstudy.role") == "job"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    recorded = {(r.data.tags["nasstudy.rule"], frozenset(json.loads(r.data.tags["nasstudy.wildcards"]).items()))
                for r in children}  # fmt: skip
    planned = {(rule, frozenset(tuple(kv.split("=")) for kv in wc.split(", ") if kv)) for rule, wc in jobs}
    assert len(children) == len(jobs) and recorded == planned  # one child per job, no more
    for r in children:
        assert r.info.status == "FINISHED" and r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
    prep = next(r for r in children if r.data.tags["nasstudy.rule"] == "prepare_data")
    assert {a.path for a in client.list_artifacts(prep.info.run_id)} >= {"summary.json", "preview.png"}
    # Queryable by plain tags; costs as metrics; one job-log line per epoch.
    found = client.search_runs([exp.experiment_id], filter_string="tags.space = 'nse' and tags.method = 'random'")
    assert sorted(r.data.tags["rule"] for r in found) == ["retrain", "search"]
    assert all(r.data.tags["seed"] == "3" and r.data.tags["study"] == "default" for r in found)
    assert all(r.data.metrics["flops"] > 0 and r.data.metrics["params"] > 0 for r in found)
    log = (project / "logs" / "default" / "retrain" / "nse" / "random" / "rep0.log").read_text()
    assert re.search(r"^\[nasstudy\] retrain epoch 1/1 train_loss=\S+ train_acc=\S+ val_acc=\S+$", log, re.M), log

    shown = subprocess.run(
        [BIN / "nasstudy", "lineage", "--params", str(params), "results/default/retrain/nse/random/rep0/model.pt"],
        cwd=project, capture_output=True, text=True,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert f"MLflow {server}" in shown.stdout and "verified: all" in shown.stdout


def test_study_stops_before_any_job_when_the_server_is_down(tmp_path: Path) -> None:
    """Real Snakemake, a port nobody listens on: one line naming the URI, no job started, no local store."""
    project = make_project(tmp_path)
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    out = snakemake(project, "--configfile", str(overlay(project, uri=uri)))
    assert out.returncode != 0 and time.monotonic() - start < 60
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("tracking error:")]
    assert len(lines) == 1 and uri in lines[0] and "tracking.required: false" in lines[0], out.stderr[-3000:]
    assert not (project / "results").exists() and not (project / "mlflow.db").exists()


@pytest.mark.slow
def test_optional_server_down_warns_and_the_jobs_log_locally(tmp_path: Path) -> None:
    """tracking.required: false through real Snakemake: one warning, then the jobs run and log to mlflow.db."""
    from mlflow.tracking import MlflowClient

    project = make_project(tmp_path)
    uri = f"http://127.0.0.1:{free_port()}"
    out = snakemake(project, "--configfile", str(overlay(project, uri=uri, required=False)), "--until", "init_space")
    assert out.returncode == 0, out.stderr[-3000:]
    warnings = [ln for ln in out.stderr.splitlines() if ln.startswith("warning: MLflow tracking server")]
    assert len(warnings) == 1 and uri in warnings[0] and "mlflow.db" in warnings[0]
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("nasstudy").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["init_space", "study:default"]
    assert all(r.info.status == "FINISHED" for r in runs)
