"""The fork server (nasstudy.zygote): a job forked from it sees and writes what a job started on its
own would; a failing or killed job fails alone; signals reach the worker; the server never outlives
Snakemake and never cuts a running job short."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from nasstudy import zygote

TESTS = Path(__file__).parent


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> subprocess.Popen:
    """A fork server started as Snakemake's onstart does, with tests/ importable (helpers.zygote_jobs); it
    preloads only torch (what the test jobs use: seconds instead of the study's ten)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    monkeypatch.delenv(zygote.ENV_SWITCH, raising=False)
    monkeypatch.setenv(zygote.ENV_PRELOAD, "torch,nasstudy.utils")
    assert zygote.start(threads=1) is not None
    proc = zygote._server
    yield proc
    zygote.stop(wait_s=30)
    assert proc.poll() is not None, "the server outlived stop()"


def job(call: str, arg: object, cwd: Path, **env: str) -> subprocess.Popen:
    """A job script as Snakemake starts one: a new Python that calls zygote.run."""
    code = f"from nasstudy import zygote; zygote.run({arg!r}, 'helpers.zygote_jobs:{call}')"
    return subprocess.Popen([sys.executable, "-c", code], cwd=cwd, env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def finish(proc: subprocess.Popen, timeout: float = 60) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def wait_for(check, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_forked_job_sees_and_writes_what_a_fresh_process_does(server: subprocess.Popen, tmp_path: Path) -> None:
    forked, fresh = tmp_path / "forked.json", tmp_path / "fresh.json"
    a = finish(job("describe", str(forked), tmp_path, ZYGOTE_TEST_VALUE="only in the job's env"))
    b = finish(job("describe", str(fresh), tmp_path, ZYGOTE_TEST_VALUE="only in the job's env", NASSTUDY_ZYGOTE="0"))
    assert a.returncode == b.returncode == 0, a.stderr + b.stderr
    again = tmp_path / "again.json"
    assert finish(job("describe", str(again), tmp_path)).returncode == 0
    one, two, three = (json.loads(f.read_text()) for f in (forked, fresh, again))
    assert one.pop("ppid") == server.pid == three["ppid"], "the job did not run in a forked worker"
    assert two.pop("ppid") != server.pid
    assert one.pop("pid") != two.pop("pid")
    # torch's default generator is seeded at random in a new process: in each worker too, not shared
    assert one["torch_initial_seed"] != three["torch_initial_seed"]
    assert one["torch_default_draw"] != three["torch_default_draw"]
    for d in (one, two):
        del d["torch_initial_seed"], d["torch_default_draw"]
    assert one == two  # folder, environment, argv, threads, seeded draws
    assert one["value"] == "only in the job's env" and one["cwd"] == str(tmp_path)
    # the worker writes to the job's own stdout and stderr
    assert a.stdout == b.stdout == "job stdout line\n"
    assert a.stderr == b.stderr == "job stderr line\n"


def test_a_failing_or_killed_job_fails_alone(server: subprocess.Popen, tmp_path: Path) -> None:
    failed = finish(job("fail", "job failed on purpose", tmp_path))
    assert failed.returncode == 1 and "RuntimeError: job failed on purpose" in failed.stderr
    assert finish(job("exit_with", 3, tmp_path)).returncode == 3
    assert finish(job("kill_self", None, tmp_path)).returncode == 128 + signal.SIGKILL
    assert server.poll() is None, "a job's crash ended the server"
    ok = finish(job("describe", str(tmp_path / "after.json"), tmp_path))
    assert ok.returncode == 0 and json.loads((tmp_path / "after.json").read_text())["ppid"] == server.pid


def test_sigterm_to_a_job_stops_its_worker_like_ctrl_c(server: subprocess.Popen, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    proc = job("wait_for_stop", str(marker), tmp_path)
    wait_for(lambda: marker.exists() and marker.read_text().isdigit())
    worker = int(marker.read_text())
    assert worker != proc.pid and psutil.Process(worker).ppid() == server.pid
    proc.send_signal(signal.SIGTERM)
    done = finish(proc)
    assert done.returncode == 130, done.stderr
    assert marker.read_text() == "stopped: stopped by SIGTERM"
    assert "KeyboardInterrupt: stopped by SIGTERM" in done.stderr
    assert not psutil.pid_exists(worker) or psutil.Process(worker).status() == psutil.STATUS_ZOMBIE


def test_stopping_the_server_waits_for_its_running_jobs(server: subprocess.Popen, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    proc = job("wait_for_stop", str(marker), tmp_path)
    wait_for(lambda: marker.exists() and marker.read_text().isdigit())
    server.send_signal(signal.SIGTERM)  # what onsuccess/onerror and atexit send
    time.sleep(0.5)
    assert server.poll() is None and proc.poll() is None, "the server ended under a running job"
    proc.send_signal(signal.SIGINT)
    assert finish(proc).returncode == 130
    server.wait(timeout=10)
    # a job that comes after the server has gone runs by itself
    late = finish(job("describe", str(tmp_path / "late.json"), tmp_path))
    assert late.returncode == 0 and json.loads((tmp_path / "late.json").read_text())["ppid"] != server.pid


def test_the_server_does_not_outlive_its_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Snakemake SIGKILLed (the OOM killer): its fork server ends too."""
    monkeypatch.delenv(zygote.ENV_SWITCH, raising=False)
    monkeypatch.setenv(zygote.ENV_PRELOAD, "")
    code = "import time; from nasstudy import zygote; print(zygote.start(), flush=True); time.sleep(120)"
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        path = parent.stdout.readline().strip()
        assert path.endswith("socket")
        (server,) = psutil.Process(parent.pid).children()
        parent.kill()
        parent.wait()
        server.wait(timeout=20)
        assert not os.path.exists(path)
    finally:
        parent.kill()


@pytest.mark.slow
def test_the_server_forks_from_a_single_thread(
    server: subprocess.Popen, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fork() copies only the calling thread: a server with more threads (torch's pool, pyarrow's
    jemalloc thread) could hand its workers held locks. After the study's imports: one thread."""
    zygote.stop()
    monkeypatch.delenv(zygote.ENV_PRELOAD)
    zygote.start(threads=1)
    server = zygote._server
    assert finish(job("describe", str(tmp_path / "x.json"), tmp_path)).returncode == 0  # imports done
    assert psutil.Process(server.pid).num_threads() == 1


def test_no_server_when_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(zygote.ENV_SWITCH, "0")
    assert not zygote.enabled()
    assert zygote.start() is None and zygote._server is None


def test_a_job_without_a_reachable_server_runs_by_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    out = tmp_path / "alone.json"
    proc = job("describe", str(out), tmp_path, NASSTUDY_ZYGOTE_SOCKET=str(tmp_path / "no-such-socket"))
    assert finish(proc).returncode == 0
    assert json.loads(out.read_text())["pid"] == proc.pid


def test_the_server_preloads_the_stage_of_every_study_rule() -> None:
    rules_dir = Path(__file__).resolve().parents[1] / "rules"
    rules = {m for f in rules_dir.glob("*.smk") for m in re.findall(r"^rule (\w+):", f.read_text(), re.M)}
    assert rules and rules == set(zygote.STAGES)
