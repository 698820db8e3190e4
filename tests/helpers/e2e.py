"""Helpers for the end-to-end tests: a temp copy of the project on tiny params, Snakemake in it."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "params" / "tiny.yaml"
BIN = Path(sys.executable).parent


def make_project(dest: Path) -> Path:
    """A copy of the project's workflow files with the tiny params as its default, in its own git + DVC repo."""
    for name in ("Snakefile", "dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, dest / name)
    for name in ("rules", "workflow", "params", "src"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (dest / ".dvc").mkdir()
    shutil.copy(ROOT / ".dvc" / "config", dest / ".dvc" / "config")
    shutil.copy(ROOT / ".gitignore", dest / ".gitignore")
    shutil.copy(TINY, dest / "params" / "default.yaml")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "tiny"], cwd=dest, check=True)
    return dest


def search_only_transferred_methods(project: Path) -> None:
    """Cut the project's tiny study to the search methods it transfers (random, rea): every rule still
    runs, in 29 jobs instead of 41. Every job's seeds come from the study seed and its own wildcards,
    so each metrics file equals the full tiny study's (the report, which has none, differs)."""
    path = project / "params" / "default.yaml"
    params = yaml.safe_load(path.read_text())
    params.setdefault("search", {})["methods"] = list(params["transfer"]["methods"])
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def snakemake(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`snakemake --cores 2 ARGS` in `cwd`; `env`: variables added to this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", *args], cwd=cwd, capture_output=True, text=True,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def planned_jobs(cwd: Path, *args: str) -> set[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run (with `args`: targets, --configfile) would execute."""
    out = snakemake(cwd, "--dry-run", *args)
    assert out.returncode == 0, out.stderr
    jobs, rule = set(), None
    for line in (out.stdout + out.stderr).splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):", line):
            rule = m.group(1)
            jobs.add((rule, ""))
        elif rule and (m := re.match(r"^\s+wildcards: (.*)$", line)):
            jobs.discard((rule, ""))
            jobs.add((rule, m.group(1).strip()))
    return {j for j in jobs if j[0] != "all"}


def metrics_files(project: Path) -> dict[str, bytes]:
    res = project / "results" / "default"
    return {str(p.relative_to(res)): p.read_bytes() for p in sorted(res.rglob("metrics.json"))}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(folder: Path) -> Iterator[str]:
    """A real `mlflow server` on a free local port (one worker, SQLite backend and artifacts in
    `folder`), in its own process group so that its uvicorn worker stops with it; yields its URI."""
    import requests

    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    # fmt: off
    cmd = [BIN / "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
           "--artifacts-destination", str(folder / "artifacts"), "--default-artifact-root", "mlflow-artifacts:/"]
    # fmt: on
    with open(folder / "server.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (folder / "server.log").read_text()[-3000:]
            try:
                if requests.get(f"{uri}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "mlflow server did not answer within 120 s"
            time.sleep(0.5)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
