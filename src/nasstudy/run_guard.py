"""What `nasstudy run` checks around Snakemake so that a crash never needs manual repair.

- A live run in the same folder (another `nasstudy run` or `snakemake` whose working directory is
  this one) is never disturbed: the new run stops with a one-line message naming its PID.
- A lock left by a run that died (SIGKILL, power loss) is detected — lock files, but no live
  Snakemake process here — explained in one line and removed with `snakemake --unlock`.
- Outputs of jobs that were running when a run died are redone with `--rerun-incomplete`; the jobs
  themselves continue from their checkpoints (nasstudy.checkpoint).
- When a run fails, the one-line error each failed job left in its log is printed at the end.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

ERROR_MARK = "[nasstudy] ERROR "


def live_snakemake_runs(workdir: Path) -> list[tuple[int, str]]:
    """(pid, command line) of running Snakemake processes whose working directory is `workdir`."""
    workdir = workdir.resolve()
    own = {os.getpid(), os.getppid()}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in own:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            if "snakemake" not in cmd or "--unlock" in cmd or "snakemake/scripts/" in cmd:
                continue
            if Path(os.readlink(entry / "cwd")).resolve() == workdir and _is_running(entry):
                found.append((int(entry.name), cmd))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return sorted(found)


def _is_running(proc: Path) -> bool:
    """False for a zombie (exited, not yet reaped)."""
    try:
        return (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


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
