"""Crash-safe resume end to end: the tiny study (searching with the two methods it transfers) SIGKILLed
at 10 seeded points (inside evolution generations, warmups, searches, retrains and transfers), rerun
with `nasstudy run` each time, ends with the metrics of an uninterrupted run; no finished job is
redone; `dvc status` is clean."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from helpers.e2e import BIN, ROOT, make_project, metrics_files, search_only_transferred_methods

sys.path.insert(0, str(ROOT / "benchmarks"))
import crash_drill  # noqa: E402

pytestmark = pytest.mark.slow


def test_ten_kills_end_like_an_uninterrupted_run(study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Jobs start on their own here (no fork server): forked from it, the tiny study's jobs last well
    # under a second and the whole study ends before most of the drill's kill points (0.1-3 s after a
    # job's start or save). Killed workers and a killed parent are tests/test_zygote.py's; `study`
    # ran with the server, so the comparison below also holds across the two ways to start a job.
    monkeypatch.setenv("NASSTUDY_ZYGOTE", "0")
    project = make_project(tmp_path)
    search_only_transferred_methods(project)  # 29 of the 41 jobs: every rule, every kill point
    result = crash_drill.drill(project, "default", kills=10, seed=3, timeout=600)
    (tmp_path / "drill.json").write_text(json.dumps(result, indent=2))
    assert [k["killed"] for k in result["kills"]] == [True] * 10, result["kills"]
    assert result["final"]["rc"] == 0, (project / "crash_drill.log").read_text()[-3000:]
    # Each kill came while (or just after) a job of its rule ran; at least some inside long stages.
    assert {k["rule"] for k in result["kills"]} == {"evolve_space", "warmup_supernet", "search", "retrain", "transfer"}
    hit = {j["rule"] for k in result["kills"] for j in k["jobs"]}
    assert {"evolve_space", "warmup_supernet", "search"} <= hit, result["kills"]
    resumed = [job for k in [*result["kills"], result["final"]] for job in k["resumed"]]
    assert len(resumed) >= 4, f"too few killed jobs continued from a checkpoint: {resumed}"

    drilled, uninterrupted = metrics_files(project), metrics_files(study)
    assert len(drilled) >= 16 and drilled.keys() < uninterrupted.keys()
    assert [k for k in drilled if drilled[k] != uninterrupted[k]] == []
    status = subprocess.run([BIN / "dvc", "status", "--json"], cwd=project, capture_output=True, text=True)
    assert status.returncode == 0 and json.loads(status.stdout) == {}, status.stdout
    assert not list((project / ".checkpoints").rglob("*.pt")), "checkpoints left after success"
    assert not list((project / ".checkpoints").rglob("*.events")), "events left after success"

    # No job that had finished was done again: one FINISHED MLflow run per job.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("nasstudy")
    runs = client.search_runs([exp.experiment_id], "tags.`nasstudy.role` = 'job'", max_results=1000)
    finished = [r for r in runs if r.info.status == "FINISHED"]
    counts = Counter(r.info.run_name for r in finished)
    assert len(counts) == 29  # every job of this study (the 41 of the tiny study, less 12 searches and retrains)
    # A job killed after it finished but before Snakemake recorded it (a window of a second or so)
    # is redone by Snakemake; it must then have continued from its last checkpoint.
    for name in [n for n, c in counts.items() if c > 1]:
        latest = max((r for r in finished if r.info.run_name == name), key=lambda r: r.info.start_time)
        assert "nasstudy.resumed_from" in latest.data.tags, f"{name} was redone from scratch"
