"""A throwaway single-node SLURM cluster on this machine, so that tests submit real jobs with sbatch.

Debian's packages (slurmctld, slurmd, slurm-client, munge) are installed with apt-get when they are
missing and we are root. The cluster lives in one folder: its own munge key and socket, a
slurm.conf for one node on 127.0.0.1 with the machine's real CPUs and memory (as `slurmd -C` reports
them), select/cons_tres with cores and memory as consumable, proctrack/linuxproc and task/none (no
cgroups needed), no accounting database (job states come from squeue; MinJobAge keeps finished
jobs visible). Each daemon runs in the foreground (-F/-D) as a child process, so it is stopped by
its PID and nothing outlives the test. Clients find the cluster through SLURM_CONF (`cluster.env`).

The node also advertises `gpus` GPUs backed by /dev/null-like character devices: SLURM's GPU
bookkeeping (`--gpus=1` from the profile's `gpu` resource) is exercised while the study itself runs
on the CPU.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
BINARIES = ("munged", "slurmctld", "slurmd", "sinfo", "sbatch", "squeue", "srun", "scancel")
FAKE_GPU_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random")


def missing_binaries() -> list[str]:
    """SLURM and munge programs not found on PATH (or in /usr/sbin, where Debian puts the daemons)."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin"
    return [b for b in BINARIES if shutil.which(b, path=path) is None]


def ensure_slurm() -> str | None:
    """Install SLURM with apt-get where it is missing; the reason it cannot be had, or None when it is there."""
    missing = missing_binaries()
    if not missing:
        return None
    if os.geteuid() != 0:
        return f"SLURM is not installed (missing {', '.join(missing)}) and installing it needs root"
    if shutil.which("apt-get") is None:
        return f"SLURM is not installed (missing {', '.join(missing)}) and there is no apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    out = subprocess.run(install, capture_output=True, text=True, env=env)
    if out.returncode != 0:  # a fresh machine may have no package lists yet
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True, env=env)
        out = subprocess.run(install, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        tail = " | ".join((out.stderr or out.stdout).strip().splitlines()[-3:])
        return f"apt-get install {' '.join(PACKAGES)} failed (exit {out.returncode}): {tail}"
    missing = missing_binaries()
    return f"SLURM still incomplete after apt-get install: missing {', '.join(missing)}" if missing else None


def sbin(name: str) -> str:
    return shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin") or name


def free_ports(n: int) -> list[int]:
    """`n` distinct TCP ports on 127.0.0.1 that nothing listens on now (several test clusters may run at once)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


def node_hardware() -> dict[str, str]:
    """This machine as `slurmd -C` sees it (CPUs, sockets, cores, threads, RealMemory): the node must not
    claim more than slurmd finds, or slurmctld drains it."""
    out = subprocess.run([sbin("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
    first = out.splitlines()[0]
    fields = dict(part.split("=", 1) for part in first.split() if "=" in part)
    fields.pop("NodeName", None)
    return fields


class SlurmStartError(RuntimeError):
    """The cluster did not come up; the message carries the daemons' last log lines."""


@dataclass
class SlurmCluster:
    """One controller, one node, one partition (`debug`) in `root`; start() then stop()."""

    root: Path
    gpus: int = 2
    min_job_age: int = 600
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    host: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    partition: str = "debug"

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """The environment in which sinfo/sbatch/srun (and Snakemake's SLURM executor) talk to this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def write_config(self) -> None:
        """munge key, slurm.conf and gres.conf; every path and port private to this cluster."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # munged refuses a socket folder others cannot traverse
        for sub in ("etc", "state", "spool", "log"):
            (self.root / sub).mkdir(exist_ok=True)
        key = self.root / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
            key.chmod(0o400)
        hw = node_hardware()
        gpus = min(self.gpus, len(FAKE_GPU_DEVICES))
        r = self.root
        ctld_port, slurmd_port = free_ports(2)
        lines = [
            "ClusterName=nastest",
            f"SlurmctldHost={self.host}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={r / 'munge.socket'}",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "MpiDefault=none",
            "MailProg=/bin/true",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "SchedulerType=sched/backfill",
            "ReturnToService=2",
            f"MinJobAge={self.min_job_age}",
            "KillWait=5",
            "InactiveLimit=0",
            "GresTypes=gpu",
            f"NodeName={self.host} NodeAddr=127.0.0.1 NodeHostname={self.host} "
            + " ".join(f"{k}={v}" for k, v in hw.items())
            + (f" Gres=gpu:{gpus}" if gpus else "")
            + " State=UNKNOWN",
            f"PartitionName={self.partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        gres = ["AutoDetect=off"] + [f"NodeName={self.host} Name=gpu File={d}" for d in FAKE_GPU_DEVICES[:gpus]]
        (self.root / "etc" / "gres.conf").write_text("\n".join(gres) + "\n")

    def spawn(self, name: str, cmd: list[str]) -> None:
        out = open(self.root / "log" / f"{name}.out", "w")  # noqa: SIM115 - the daemon holds it until stop()
        self.procs[name] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.root)
        out.close()

    def start(self, timeout: float = 60.0) -> None:
        """munged, slurmctld, slurmd in the foreground; returns when sinfo shows the node idle. On failure
        every daemon already started is stopped before the error propagates."""
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> None:
        self.write_config()
        r = self.root
        self.spawn(
            "munged",
            [sbin("munged"), "-F", f"--socket={r / 'munge.socket'}", f"--key-file={r / 'munge.key'}",
             f"--log-file={r / 'log' / 'munged.log'}", f"--pid-file={r / 'munged.pid'}",
             f"--seed-file={r / 'munged.seed'}"],
        )  # fmt: skip
        self.wait_for(lambda: (r / "munge.socket").exists(), timeout, "munged to open its socket")
        self.spawn("slurmctld", [sbin("slurmctld"), "-D", "-i"])
        # The SLURM executor strips SLURM_* (SLURM_CONF too) from the environment of the `srun` it runs
        # inside each job, so srun reads the default /etc/slurm/slurm.conf: slurmd (and every job step
        # it starts) gets a private mount namespace where /etc/slurm is this cluster's etc/ folder.
        # Nothing outside that namespace sees the bind mount.
        etc, slurmd = shlex.quote(str(r / "etc")), shlex.quote(sbin("slurmd"))
        bind = f"mkdir -p /etc/slurm && mount --bind {etc} /etc/slurm && exec {slurmd} -D -N {shlex.quote(self.host)}"
        self.spawn("slurmd", ["unshare", "--mount", "--propagation", "private", "sh", "-c", bind])
        self.wait_for(lambda: self.node_state() == "idle", timeout, "the node to be idle in sinfo")

    def node_state(self) -> str:
        out = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, env=self.env, timeout=10
        )
        return out.stdout.strip() if out.returncode == 0 else ""

    def wait_for(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise SlurmStartError(f"{name} exited ({proc.returncode}) waiting for {what}: {self.logs()}")
            if ready():
                return
            time.sleep(0.2)
        state = self.node_state()
        raise SlurmStartError(f"gave up waiting {timeout:.0f} s for {what} (node: {state!r}): {self.logs()}")

    def logs(self, lines: int = 4) -> str:
        """The last lines of each daemon's output, for a failure message."""
        parts = []
        for name in self.procs:
            log, out = self.root / "log" / f"{name}.log", self.root / "log" / f"{name}.out"
            f = log if log.is_file() and log.stat().st_size else out
            if f.is_file() and f.stat().st_size:
                tail = f.read_text(errors="replace").strip().splitlines()[-lines:]
                parts.append(f"[{f.name}] " + " / ".join(tail))
        return " ".join(parts)

    def stop(self) -> None:
        """Cancel this cluster's jobs, then stop each daemon we started (TERM, then KILL) by its PID."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            try:  # pending and running jobs only (squeue's default states)
                ids = subprocess.run(
                    ["squeue", "-h", "-o", "%i"], capture_output=True, text=True, env=self.env, timeout=10
                )
                if ids.stdout.split():
                    subprocess.run(["scancel", *ids.stdout.split()], capture_output=True, env=self.env, timeout=10)
            except (OSError, subprocess.SubprocessError):
                pass  # the daemons are stopped below all the same
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
