"""What `nasstudy run` checks around Snakemake so that a crash never needs manual repair.

- A live run in the same folder (another `nasstudy run` or `snakemake` whose working directory is
  this one) is never disturbed: the new run stops with a one-line message naming its PID.
- A lock left by a run that died (SIGKILL, power loss) is detected — lock files, but no live
  Snakemake process here — explained in one line and removed with `snakemake --unlock`.
- Outputs of jobs that were running when a run died are redone with `--rerun-incomplete`; the jobs
  themselves continue from their checkpoints (nasstudy.checkpoint).
- When a run fails, the one-line error each failed job left in its log is printed at the end.
- Ctrl-C or SIGTERM to `nasstudy run` stops Snakemake and its jobs cleanly and waits for them: no
  lock, no orphaned Snakemake, finished jobs kept, stopped ones resume from their checkpoints.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

ERROR_MARK = "[nasstudy] ERROR "
JOB_SCRIPT = "snakemake/scripts/"  # a local job is `python .snakemake/scripts/tmpXXXX.run_stage.py`
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def live_snakemake_runs(workdir: Path) -> list[tuple[int, str]]:
    """(pid, command line) of running Snakemake processes whose working directory is `workdir`
    (psutil, so that this works wherever psutil does, not only on Linux's /proc)."""
    workdir = workdir.resolve()
    own = {os.getpid(), os.getppid()}
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if proc.pid in own or "snakemake" not in cmd or "--unlock" in cmd or JOB_SCRIPT in cmd:
            continue
        try:
            if Path(proc.cwd()).resolve() == workdir and proc.status() != psutil.STATUS_ZOMBIE:
                found.append((proc.pid, cmd))
        except (psutil.Error, OSError):
            continue  # gone meanwhile, or not ours to read
    return sorted(found)


def has_lock(workdir: Path) -> bool:
    locks = workdir / ".snakemake" / "locks"
    return locks.is_dir() and any(locks.iterdir())


def guard(workdir: Path, unlock_cmd: list[str]) -> str | None:
    """None when the run may start (after removing a dead run's lock); else the one-line reason not to."""
    live = live_snakemake_runs(workdir)
    if live:
        pid, cmd = live[0]
        return (
            f"another run is working in {workdir} (pid {pid}: {cmd[:100]}); wait for it to finish, "
            f"or stop it with `kill {pid}` and run again. Nothing was changed."
        )
    if has_lock(workdir):
        print(
            f"nasstudy: {workdir / '.snakemake' / 'locks'} was left by a run that died (no Snakemake process is "
            "working here); removing the stale lock. Jobs it left unfinished are redone from their checkpoints.",
            file=sys.stderr,
        )
        subprocess.run(unlock_cmd, cwd=workdir, capture_output=True, text=True, check=False)
    return None


def job_errors(logs: Path, since: float) -> list[str]:
    """The one-line errors that jobs wrote to their logs (under `logs`) since `since` (epoch seconds)."""
    lines = []
    if not logs.is_dir():
        return lines
    for log in sorted(logs.rglob("*.log")):
        try:
            if log.stat().st_mtime < since:
                continue
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith(ERROR_MARK):
                    lines.append(line[len(ERROR_MARK) :] + f" (log: {log})")
        except OSError:
            continue
    return lines


def error_line(rule: str, wildcards: dict[str, str], exc: BaseException) -> str:
    """`rule[k=v,...]: ExcType: message`, on one line, for the job's log and the final summary."""
    wc = ",".join(f"{k}={v}" for k, v in wildcards.items())
    msg = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        where = f" writing {exc.filename}" if exc.filename else ""
        msg = f"no space left on device{where}: free some space and run again (finished jobs are kept)"
    return f"{ERROR_MARK}{rule}[{wc}]: {type(exc).__name__}: {msg}"


def run_snakemake(cmd: list[str], env: dict[str, str]) -> tuple[int, int | None]:
    """Run Snakemake to its end: (exit code, the SIGINT/SIGTERM that stopped it, or None).

    A SIGINT (Ctrl-C) or SIGTERM to nasstudy is passed on as SIGTERM to Snakemake (it starts no new
    job) and to its running jobs (each stops like on Ctrl-C: one error line, MLflow run FAILED,
    checkpoint kept), then nasstudy waits until Snakemake has ended and released its lock. SIGTERM,
    not SIGINT, because a second delivery must be harmless: Ctrl-C in a terminal reaches Snakemake
    and the jobs directly as well, and Snakemake's SIGTERM handler only sets a flag.
    """
    received: list[int] = []
    proc: subprocess.Popen | None = None

    def stop(signum: int, _frame: object) -> None:
        received.append(signum)
        if proc is not None:
            stop_snakemake(proc.pid)

    previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    try:
        proc = subprocess.Popen(cmd, env=env)
        if received:  # arrived while Snakemake was being started
            stop_snakemake(proc.pid)
        rc = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return rc, (received[0] if received else None)


def stop_snakemake(pid: int) -> None:
    """SIGTERM to Snakemake `pid` and to each local job it is running."""
    try:
        snakemake = psutil.Process(pid)
        children = snakemake.children(recursive=True)
    except psutil.Error:
        return  # already gone
    jobs = []
    for p in children:  # one that ends meanwhile (a zombie, a fork server's worker) must not stop the rest
        with contextlib.suppress(psutil.Error):
            if JOB_SCRIPT in " ".join(p.cmdline()):
                jobs.append(p)
    for p in (snakemake, *jobs):
        with contextlib.suppress(psutil.Error):
            p.send_signal(signal.SIGTERM)


def stop_on_signal() -> None:
    """In a job: the first SIGINT/SIGTERM raises KeyboardInterrupt (the job logs its one error line,
    marks its MLflow run FAILED, removes temp files); later ones are ignored so that they cannot cut
    that clean-up short (Ctrl-C in a terminal reaches a job directly and through nasstudy)."""

    def stop(signum: int, _frame: object) -> None:
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    for s in STOP_SIGNALS:
        signal.signal(s, stop)
