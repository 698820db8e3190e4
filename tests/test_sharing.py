"""Sharing through a DVC remote: push the tiny study to a local folder remote, clone the repo, pull,
and the study command recomputes nothing; without a remote, push says how to add one."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from helpers.e2e import BIN, metrics_files, planned_jobs

pytestmark = pytest.mark.slow
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]


def nasstudy(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([BIN / "nasstudy", *args], cwd=cwd, capture_output=True, text=True)


def test_push_pull_into_a_fresh_clone_recomputes_nothing(study: Path, tmp_path: Path) -> None:
    origin = tmp_path / "origin"
    shutil.copytree(study, origin, symlinks=True)  # the shared study stays untouched
    out = nasstudy(origin, "push")
    assert out.returncode == 2 and "no DVC remote is configured" in out.stderr, out.stderr

    subprocess.run([BIN / "dvc", "remote", "add", "-d", "store", str(tmp_path / "store")], cwd=origin, check=True)
    subprocess.run([*GIT, "add", "dvc.lock", ".dvc/config"], cwd=origin, check=True)
    subprocess.run([*GIT, "commit", "-qm", "study results"], cwd=origin, check=True)
    out = nasstudy(origin, "push")
    assert out.returncode == 0, out.stdout + out.stderr
    assert any((tmp_path / "store").rglob("*")), "nothing arrived in the remote"

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True)
    assert not (clone / "results").exists()
    out = nasstudy(clone, "pull")
    assert out.returncode == 0, out.stdout + out.stderr
    assert metrics_files(clone) == metrics_files(study)
    assert planned_jobs(clone) == set()
    run = nasstudy(clone, "run", "--cores", "2")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Nothing to be done" in run.stdout + run.stderr
    ran = [p for p in (clone / "logs").rglob("*.log") if p.stat().st_size]  # `--touch` leaves empty logs
    assert ran == [], f"jobs ran in the clone: {ran}"
