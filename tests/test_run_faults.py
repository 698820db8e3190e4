"""`nasstudy run` / `push` never report a wrong or missing result as done.

Ctrl-C or SIGTERM stops Snakemake and its jobs cleanly (exit 130/143, one line, no lock, nothing
orphaned, finished files kept); a run outside the project is refused before it writes anything;
`--until evolve_space` (and `dvc repro`, whose stages use --until) reaches the last generation;
`push` refuses when dvc.lock records files that neither the cache nor the remote holds.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from helpers.e2e import BIN, make_project

from nasstudy import run_guard

# The only tracebacks allowed: a job whose Python was still starting when Ctrl-C reached the group,
# either in Python's own start (site import; Python prints "Fatal Python error: init_import_site") or
# in the preamble Snakemake writes at the top of a `script:` job (line 2 of .snakemake/scripts/tmp*.py:
# its imports), before any nasstudy code runs. With jobs forked from the fork server the tiny study's
# jobs last well under a second, so Ctrl-C 2 s into a run can land on such a start.
PREAMBLE_FRAME = re.compile(
    r'Traceback \(most recent call last\):\n  File "[^"]*/\.snakemake/scripts/tmp\w+\.\w+\.py", line 2,'
)


def interrupted_startups(text: str) -> int:
    """How many of the log's tracebacks are job starts interrupted before nasstudy code ran."""
    return text.count("Fatal Python error: init_import_site") + len(PREAMBLE_FRAME.findall(text))


def nasstudy(cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`nasstudy ARGS` in `cwd`, in its own process group: killed whole if it outlives `timeout`."""
    proc = subprocess.Popen(
        [BIN / "nasstudy", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"nasstudy {' '.join(args)} still ran after {timeout} s: {err[-2000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def in_flight(project: Path) -> set[str]:
    """Outputs of the jobs running now (Snakemake's .snakemake/incomplete markers: base64 names)."""
    folder = project / ".snakemake" / "incomplete"
    names = [f.name for f in folder.rglob("*") if f.is_file()] if folder.is_dir() else []
    out = set()
    for name in names:
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            out.add(base64.urlsafe_b64decode(name).decode())
    return out


def finished_files(project: Path) -> dict[str, bytes]:
    """results/ files of finished jobs: without the outputs of running jobs (a warmup writes its
    supernet.pt before it scores archs; a stopped job's outputs are removed, as they must be)."""
    before = in_flight(project)
    found = files(project / "results")
    running = before | in_flight(project)
    return {k: v for k, v in found.items() if f"results/{k}" not in running}


def test_run_outside_a_project_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    out = nasstudy(tmp_path, "run", "--cores", "1", timeout=60)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{tmp_path} is not a nasstudy project" in lines[0], out.stderr
    assert "Nothing was written" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_live_runs_are_found_without_reading_proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """run_guard asks psutil, so that it also works where there is no /proc (macOS, BSD)."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "snakemake"], cwd=tmp_path)
    iterdir = Path.iterdir

    def no_proc(self: Path) -> object:
        if str(self) == "/proc":
            raise PermissionError("no /proc here")
        return iterdir(self)

    monkeypatch.setattr(Path, "iterdir", no_proc)
    try:
        assert [pid for pid, _ in run_guard.live_snakemake_runs(tmp_path)] == [sleeper.pid]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_stop_reaches_snakemake_although_a_child_has_just_ended(tmp_path: Path) -> None:
    """A child that ended and is not yet reaped (a zombie: psutil cannot read its command line; the
    fork server's workers end all the time) made stop_snakemake return without signalling Snakemake."""
    marker = tmp_path / "stopped"
    code = (
        "import signal, subprocess, sys, time\n"
        f"signal.signal(signal.SIGTERM, lambda *a: (open({str(marker)!r}, 'w').write('x'), sys.exit(0)))\n"
        "child = subprocess.Popen([sys.executable, '-c', 'pass'])\n"  # never waited for: a zombie
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline().strip() == "ready"
        deadline = time.time() + 10
        while not any(c.status() == psutil.STATUS_ZOMBIE for c in psutil.Process(parent.pid).children()):
            assert time.time() < deadline
            time.sleep(0.05)
        run_guard.stop_snakemake(parent.pid)
        parent.wait(timeout=10)
        assert marker.read_text() == "x", "Snakemake was not sent SIGTERM"
    finally:
        parent.kill()
        parent.wait()


@pytest.mark.slow
@pytest.mark.parametrize("sig, to_group", [(signal.SIGINT, True), (signal.SIGTERM, False)], ids=["ctrl-c", "sigterm"])
def test_signal_stops_snakemake_and_its_jobs_cleanly(tmp_path: Path, sig: int, to_group: bool) -> None:
    """Ctrl-C reaches the whole process group (nasstudy, Snakemake, the jobs), `kill PID` only nasstudy."""
    project = make_project(tmp_path)
    log = tmp_path / "run.err"
    with open(log, "w") as err:
        proc = subprocess.Popen([BIN / "nasstudy", "run", "--cores", "1"], cwd=project, stdout=subprocess.DEVNULL,
                                stderr=err, start_new_session=True)  # fmt: skip
    try:
        deadline = time.time() + 300
        started = project / "logs/default/evolve_space/nse/gen1.log"  # prepare_data and init_space are done
        while not started.exists():
            assert time.time() < deadline and proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
        time.sleep(2)
        finished = finished_files(project)
        (os.killpg if to_group else os.kill)(proc.pid, sig)
        rc = proc.wait(timeout=180)
        alive = run_guard.live_snakemake_runs(project)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever the test left running, orphans included
        proc.wait()
    text = log.read_text()
    assert rc == 128 + sig, text[-3000:]
    assert text.count("Traceback") == interrupted_startups(text), text[-3000:]
    mine = [x for x in text.splitlines() if x.startswith("nasstudy: ") and "dvc.lock keeps its old record" not in x]
    assert mine[-1].startswith(f"nasstudy: stopped by {signal.Signals(sig).name}: ") and len(mine) == 2, mine
    assert alive == [], "Snakemake still runs, orphaned"
    assert not run_guard.has_lock(project), "the lock was left behind"
    after = files(project / "results")
    assert {k: after.get(k) for k in finished} == finished, "a finished file was lost or changed"
    assert not [k for k in after if k.endswith(".tmp")], "half-written temp files left behind"


@pytest.mark.slow
def test_dvc_repro_and_until_reach_the_last_generation(tmp_path: Path) -> None:
    """dvc.yaml's evolve_space stage runs `nasstudy run --until init_space evolve_space`: Snakemake's
    own --until stopped after gen1, or failed with "Out of jobs ready to be started"."""
    project = make_project(tmp_path)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run([BIN / "dvc", "repro", "evolve_space"], cwd=project, env=env, capture_output=True,
                         text=True, timeout=900)  # fmt: skip
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    space = project / "results/default/space/nse"
    assert sorted(p.name for p in space.iterdir()) == ["gen1", "gen2"]
    assert (space / "gen2" / "space_state.json").is_file()
    assert not (project / "results/default/supernet").exists(), "--until ran beyond the evolution"
    status = subprocess.run([BIN / "dvc", "status", "evolve_space"], cwd=project, capture_output=True, text=True)
    assert "up to date" in status.stdout, status.stdout


@pytest.mark.slow
def test_push_refuses_when_files_are_in_neither_cache_nor_remote(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    make_project(project)
    out = nasstudy(project, "run", "--until", "prepare_data", "--cores", "1")
    assert out.returncode == 0, out.stderr[-3000:]
    store = tmp_path / "store"
    subprocess.run([BIN / "dvc", "remote", "add", "-d", "store", str(store)], cwd=project, check=True)
    cache = project / ".dvc" / "cache" / "files" / "md5"
    one = next(p for p in sorted(cache.rglob("*")) if p.is_file() and not p.name.endswith(".dir"))
    one.unlink()  # one file's copy gone from the cache (a `dvc gc`, a lost disk)
    for damage in ("one file", "the whole cache"):
        out = nasstudy(project, "push")
        assert out.returncode == 2, f"{damage}: {out.stdout}{out.stderr}"
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "neither in the DVC cache nor on the remote" in lines[0], out.stderr
        assert "results/default/data/" in lines[0] and "pushed" not in out.stdout
        assert not store.exists() or not any(store.rglob("*")), f"{damage}: a partial push"
        shutil.rmtree(project / ".dvc" / "cache", ignore_errors=True)  # next: the whole cache gone
    # What the message suggests: the files are still in results/, and the run commits them again.
    out = nasstudy(project, "run", "--until", "prepare_data", "--cores", "1")
    assert out.returncode == 0, out.stderr[-3000:]
    out = nasstudy(project, "push")
    assert out.returncode == 0 and "pushed" in out.stdout, out.stdout + out.stderr
    assert any(store.rglob("*")), "nothing arrived in the remote"
