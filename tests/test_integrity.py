"""Never report a wrong or missing result as done.

A deleted artifact is rebuilt (rule all names every file of the study), a hand-edited one is
recomputed (its md5 differs from what its job recorded in MLflow), `nasstudy status` names both,
dvc.lock never records a phase with a missing or altered file, and a locked or corrupt mlflow.db
ends in one line instead of a traceback (waiting out a short lock when a job opens the store).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest
import yaml
from helpers.e2e import BIN, snakemake

from nasstudy import cli, pipeline
from nasstudy import mlflow_tracking as mt
from nasstudy.config import load_params

RES = Path("results/default")


def nasstudy(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([BIN / "nasstudy", *args], cwd=cwd, capture_output=True, text=True)


def md5s(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


def copy_study(study: Path, dest: Path) -> Path:
    shutil.copytree(study, dest, symlinks=True)
    return dest


@pytest.fixture()
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return load_params()


def test_corrupt_store_at_start_and_in_lineage_is_one_line(cfg: dict, capsys: pytest.CaptureFixture) -> None:
    Path("mlflow.db").write_bytes(b"not a database " * 100)
    with pytest.raises(SystemExit) as e:
        pipeline.on_start(cfg)
    assert e.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tracking error: MLflow store sqlite:///"), lines
    assert "file is not a database" in lines[0] and "move it away" in lines[0]
    assert cli.main(["lineage", "results/default/report/summary.md"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lineage error: tracking error:"), lines


def test_failed_start_leaves_no_parent_run_running(cfg: dict, capsys: pytest.CaptureFixture) -> None:
    cfg["notes?"] = 1  # a param name MLflow refuses: logging the params fails after create_run
    with pytest.raises(SystemExit):
        pipeline.on_start(cfg)
    err = [x for x in capsys.readouterr().err.splitlines() if "mlflow.store.db.utils" not in x]  # new store
    assert len(err) == 1 and err[0].startswith("tracking error:"), err
    client = mt.client_for(cfg)
    runs = client.search_runs([client.get_experiment_by_name("nasstudy").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]


def test_opening_a_briefly_locked_store_waits_for_it(cfg: dict) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=mt.local_uri()).search_experiments()  # the tables exist
    shutil.copy("mlflow.db", "fresh.db")  # a store this process has not opened yet
    cfg["tracking"]["uri"] = f"sqlite:///{Path('fresh.db').resolve()}"
    lock = sqlite3.connect("fresh.db", isolation_level=None, check_same_thread=False)
    lock.execute("BEGIN EXCLUSIVE")  # another process writing, longer than SQLite's 5 s busy wait
    timer = threading.Timer(8, lock.rollback)
    timer.start()
    try:
        client = mt.client_for(cfg)
        assert mt.experiment_id(client, "nasstudy")
    finally:
        timer.join()
        lock.close()


def test_dvc_commit_keeps_the_old_record_of_a_phase_with_a_missing_file(
    cfg: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    dvc = [str(BIN / "dvc")]
    subprocess.run([*dvc, "init", "--no-scm", "-q"], check=True)
    stage = {"cmd": "true", "outs": ["results/default/retrain"]}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"retrain": stage}}))
    files = [f"{RES}/retrain/a/model.pt", f"{RES}/retrain/b/model.pt"]
    for f in files:
        Path(f).parent.mkdir(parents=True, exist_ok=True)
        Path(f).write_text(f)
    pipeline.dvc_commit(cfg, artifacts=files)
    recorded = Path("dvc.lock").read_text()
    Path(files[1]).unlink()  # its job failed: Snakemake removed its old output
    pipeline.dvc_commit(cfg, artifacts=files)
    assert Path("dvc.lock").read_text() == recorded
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"nasstudy: dvc.lock keeps its old record of phase retrain: {files[1]} is missing (its job did not "
        "finish); `nasstudy run` makes it"
    ]


@pytest.mark.slow
def test_deleted_and_edited_results_are_named_then_rebuilt(study: Path, tmp_path: Path) -> None:
    project = copy_study(study, tmp_path / "p")
    res = project / RES
    before = md5s(res)
    deleted = RES / "retrain/initial/weaknas/rep0/model.pt"  # read by no other job: only `rule all` asks for it
    edited = RES / "retrain/nse/weaknas/rep0/metrics.json"
    (project / deleted).unlink()
    metrics = json.loads((project / edited).read_text())
    (project / edited).write_text(json.dumps({**metrics, "test_acc": 99.99}, indent=2) + "\n")
    assert snakemake(project, "--dry-run").stdout.count("rule retrain:") == 1  # plain snakemake sees the gap

    status = nasstudy(project, "status")
    assert status.returncode == 0, status.stderr
    assert "all done" not in status.stdout
    assert f"missing: 1 files made by finished jobs: {deleted}" in status.stdout
    assert f"altered: {edited} is not what retrain[space=nse,method=weaknas,rep=0] wrote" in status.stdout

    run = nasstudy(project, "run", "--cores", "2")
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"nasstudy: {edited} is not what retrain[space=nse,method=weaknas,rep=0] wrote" in run.stderr
    after = md5s(res)
    for rel in before:  # the same bytes as the uninterrupted study (timings and plots aside)
        if not rel.endswith(("timing.json", ".png")) and not rel.startswith("report/"):
            assert after.get(rel) == before[rel], rel
    assert "99.99" not in (res / "report/report.json").read_text()
    # after a successful run: the HTML report, its path printed, and `status` points to it
    assert "nasstudy: report: results/default/report.html" in run.stderr and (res / "report.html").is_file()
    status = nasstudy(project, "status")
    assert "jobs:    all done" in status.stdout and "dvc.lock matches the files" in status.stdout, status.stdout
    assert "html:    results/default/report.html\n" in status.stdout


@pytest.mark.slow
def test_a_failed_job_is_not_recorded_as_done_and_is_rebuilt(study: Path, tmp_path: Path) -> None:
    project = copy_study(study, tmp_path / "p")
    (project / "mlflow.db").unlink()  # no md5 records: the damage below reaches its reader
    best = project / RES / "search/nse/weaknas/rep0/best.json"
    good = best.read_bytes()
    best.write_bytes(good[: len(good) // 2])
    locked = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["retrain"]
    run = nasstudy(project, "run", "--cores", "2")
    assert run.returncode != 0 and "retrain[space=nse,method=weaknas,rep=0]" in run.stderr, run.stderr[-3000:]
    assert not (project / RES / "retrain/nse/weaknas/rep0/metrics.json").exists()  # Snakemake removed the old output
    assert yaml.safe_load((project / "dvc.lock").read_text())["stages"]["retrain"] == locked  # not the gap
    assert "dvc.lock keeps its old record of phase retrain" in run.stderr
    status = nasstudy(project, "status")
    assert "all done" not in status.stdout and "retrain 1" in status.stdout, status.stdout
    assert "changed since dvc.lock" in status.stdout

    best.write_bytes(good)
    run = nasstudy(project, "run", "--cores", "2")
    assert run.returncode == 0, run.stderr[-3000:]
    assert (project / RES / "retrain/nse/weaknas/rep0/metrics.json").read_bytes() == (
        study / RES / "retrain/nse/weaknas/rep0/metrics.json"
    ).read_bytes()
    assert "dvc.lock matches the files" in nasstudy(project, "status").stdout
