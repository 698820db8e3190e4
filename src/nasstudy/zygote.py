"""A fork server ("zygote") for the study's local jobs: one process imports torch, torchvision,
MLflow, Snakemake's script objects and the stages once; each job's script then forks a worker from
it instead of importing them again (the fixed cost of a job is mostly those imports).

How a job runs with it:
- Snakemake's onstart (`start`) launches `python -m nasstudy.zygote SOCKET PARENT_PID` and sets
  $NASSTUDY_ZYGOTE_SOCKET, which every local job inherits.
- The job's script (workflow/scripts/run_stage.py -> `run`) connects, sends its stdout/stderr file
  descriptors, working directory, environment and pickled `snakemake` object, and waits.
- The server forks a worker, which takes over those descriptors, directory and environment and
  calls `nasstudy.runner.run_job` exactly as the script would; the server sends the worker's pid
  (the script forwards SIGINT/SIGTERM to it) and, when the worker ends, its exit status.
- A worker that crashes (even SIGKILL or a segfault) only ends itself: the server reports its
  status and goes on. The server stops when Snakemake's hooks or atexit ask (SIGTERM), when its
  parent (Snakemake) dies, or on Ctrl-C, in each case after its running workers have ended.

Off with NASSTUDY_ZYGOTE=0, and wherever jobs do not run as local subprocesses of this Snakemake
(cluster executors, `--no-hooks`): the script then finds no server and runs the job itself. A
server that cannot be reached makes the job run itself too, so the server is an optimisation only.
Code is the server's: edits to nasstudy made during a run reach the jobs of the next run.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ENV_SWITCH = "NASSTUDY_ZYGOTE"  # "0": never use a fork server
ENV_SOCKET = "NASSTUDY_ZYGOTE_SOCKET"  # where the running study's server listens (set by `start`)
ENV_FORKED = "NASSTUDY_FORKED_FROM"  # in a worker: the server's pid
ENV_PRELOAD = "NASSTUDY_ZYGOTE_PRELOAD"  # modules the server imports, when not PRELOAD + the stages
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# What the server imports before it forks: what every job would otherwise import itself.
PRELOAD = (
    "numpy",
    "torch",
    "torchvision",
    "torchvision.models.detection",
    "torchvision.models.segmentation",
    "matplotlib.pyplot",
    "mlflow.tracking",
    "mlflow.entities",
    "mlflow.store.tracking.sqlalchemy_store",
    "snakemake.script",
    "snakemake.iocontainers",
    "snakemake.logging",
    "nasstudy.runner",
    "nasstudy.mlflow_tracking",
    "nasstudy.checkpoint",
    "nasstudy.run_guard",
)
STAGES = (  # one per study rule (tests/test_zygote.py checks against rules/*.smk)
    "prepare_data", "init_space", "evolve_space", "warmup_supernet", "search", "retrain",
    "ranking_sample", "ranking", "transfer", "report",
)  # fmt: skip

RUN_JOB = "nasstudy.runner:run_job"  # what a job calls, with its `snakemake` object

_server: subprocess.Popen | None = None


# --- the Snakemake side: start and stop the server ---------------------------------------------


def enabled(workflow: object | None = None) -> bool:
    """Use a fork server? Not with NASSTUDY_ZYGOTE=0, nor where jobs are not this host's subprocesses."""
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if workflow is not None and (not getattr(workflow, "local_exec", True) or getattr(workflow, "remote_exec", False)):
        return False
    return sys.platform.startswith("linux") or sys.platform == "darwin"


def start(threads: int = 1, workflow: object | None = None, wait_s: float = 10.0) -> str | None:
    """Launch the server as a child of this (Snakemake's) process; its socket path, or None when it is
    off or did not come up (the jobs then run by themselves). The socket exists as soon as the server
    listens; it accepts once its imports are done, so jobs queue meanwhile instead of failing."""
    global _server
    if _server is not None:
        return os.environ.get(ENV_SOCKET)
    os.environ.pop(ENV_SOCKET, None)  # never hand this run's jobs to a server inherited from elsewhere
    if not enabled(workflow):
        return None
    path = str(Path(tempfile.mkdtemp(prefix="nasstudy-zygote-")) / "socket")  # short: AF_UNIX has ~100 chars
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)  # what Snakemake gives each job: torch reads them when imported
    # pyarrow's (imported by MLflow) jemalloc starts a background thread: fork only from one thread
    env.setdefault("JE_ARROW_MALLOC_CONF", "background_thread:false")
    log = Path(path).with_name("server.log")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nasstudy.zygote", path, str(os.getpid())],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
        )  # fmt: skip
    deadline = time.monotonic() + wait_s
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.is_file() else []
            print(f"nasstudy: fork server did not start ({' '.join(tail) or 'no answer'}); jobs start on their own",
                  file=sys.stderr)  # fmt: skip
            remove_folder(path)
            return None
        time.sleep(0.01)
    _server = proc
    os.environ[ENV_SOCKET] = path
    atexit.register(stop)
    return path


def stop(wait_s: float = 600.0) -> None:
    """Ask the server to end (it waits for its running workers) and wait for it; remove its folder."""
    global _server
    proc, _server = _server, None
    path = os.environ.pop(ENV_SOCKET, None)
    if proc is not None:
        stop_process(proc, wait_s)
    if path:
        remove_folder(path)


def remove_folder(path: str) -> None:
    """The socket's folder (from `start`): the socket, the server's log, the folder."""
    folder = Path(path).parent
    for f in (Path(path), folder / "server.log"):
        f.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        folder.rmdir()


def stop_process(proc: subprocess.Popen, wait_s: float = 600.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- the job side: hand the job to the server, or run it here -------------------------------------


def run(job: object, call: str = RUN_JOB) -> None:
    """Run `call(job)` (a Snakemake job: `run_job(snakemake)`) in a worker forked from the study's
    server when there is one, else here. Exits with the worker's status (non-zero: the job failed)."""
    path = os.environ.get(ENV_SOCKET) if enabled() else None
    code = delegate(job, path, call) if path else None
    if code is None:
        resolve(call)(job)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # nothing else of this process's to clean up; no second traceback


def resolve(call: str) -> Callable[[object], object]:
    """The function a "module:function" string names."""
    module, _, name = call.partition(":")
    return getattr(importlib.import_module(module), name)


def delegate(job: object, path: str, call: str = RUN_JOB) -> int | None:
    """Send the job to the server at `path`; the worker's exit code (128+N when killed by signal N),
    or None when no server answers (the caller runs the job itself)."""
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
    except OSError:
        return None
    pending: list[int] = []
    worker: list[int] = []

    def forward(signum: int, _frame: object) -> None:  # Ctrl-C, or SIGTERM from Snakemake / nasstudy
        if worker:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker[0], signum)
        else:
            pending.append(signum)

    previous = {s: signal.signal(s, forward) for s in STOP_SIGNALS}
    payload = pickle.dumps(
        {"cwd": os.getcwd(), "env": dict(os.environ), "argv": list(sys.argv), "call": call, "job": pickle.dumps(job)}
    )
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        socket.send_fds(sock, [struct.pack("!Q", len(payload))], [1, 2])
        sock.sendall(payload)
        pid = struct.unpack("!q", recv_exactly(sock, 8))[0]
    except (OSError, EOFError):  # the server went away before it forked (it is stopping): run here
        if pending:
            return 128 + pending[0]  # ... unless this job was told to stop meanwhile
        for s, handler in previous.items():
            signal.signal(s, handler)
        return None
    worker.append(pid)
    for signum in pending:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
    try:
        code = struct.unpack("!i", recv_exactly(sock, 4))[0]
    except (OSError, EOFError):
        print(f"[nasstudy] fork server gone while worker {pid} ran this job", file=sys.stderr, flush=True)
        return 1
    return 128 - code if code < 0 else code


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        try:
            chunk = sock.recv(n - len(buf))
        except InterruptedError:
            continue
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    return buf


# --- the server -------------------------------------------------------------------------------


def preload() -> list[str]:
    """Import what the jobs need ($NASSTUDY_ZYGOTE_PRELOAD, comma-separated, replaces the list: tests);
    the modules that failed (a job then imports them itself and says why)."""
    names = [*PRELOAD, *(f"nasstudy.stages.{s}" for s in STAGES)]
    if os.environ.get(ENV_PRELOAD) is not None:
        names = [n.strip() for n in os.environ[ENV_PRELOAD].split(",") if n.strip()]
    failed = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - an optional module missing must not stop the server
            failed.append(f"{name}: {type(e).__name__}: {e}")
    return failed


def serve(path: str, parent: int, poll_s: float = 0.1) -> None:
    """Listen on `path`, fork a worker per connection, report each worker's exit status to its job.
    Ends (after its workers) on SIGTERM/SIGINT or when `parent` is no longer its parent."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".tmp")
    listener.listen(128)
    os.replace(path + ".tmp", path)  # the socket appears when it is listening
    stopping: list[int] = []

    def stop_serving(signum: int, _frame: object) -> None:
        stopping.append(signum)

    for s in STOP_SIGNALS:
        signal.signal(s, stop_serving)
    for line in preload():
        print(f"nasstudy zygote: not preloaded: {line}", file=sys.stderr, flush=True)
    jobs: dict[int, socket.socket] = {}
    try:
        while True:
            reap(jobs)
            if (stopping or os.getppid() != parent) and not jobs:
                break
            if stopping or os.getppid() != parent:
                time.sleep(poll_s)
                continue
            try:
                ready, _, _ = select.select([listener], [], [], poll_s)
            except InterruptedError:
                continue
            if not ready:
                continue
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                worker(conn, [listener, *jobs.values()])  # never returns
            jobs[pid] = conn
            with contextlib.suppress(OSError):
                conn.sendall(struct.pack("!q", pid))
    finally:
        listener.close()
        with contextlib.suppress(OSError):
            os.unlink(path)


def reap(jobs: dict[int, socket.socket]) -> None:
    """Send each ended worker's exit code (negative: killed by that signal) to its job."""
    while jobs:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = jobs.pop(pid, None)
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.sendall(struct.pack("!i", os.waitstatus_to_exitcode(status)))
            conn.close()


def worker(conn: socket.socket, inherited: list[socket.socket]) -> None:
    """In the forked child: become the job (its output descriptors, folder, environment, fresh
    signal handlers and random state), run it, exit with its status. Never returns."""
    code = 1
    try:
        for s in inherited:
            s.close()
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        msg, fds, _, _ = socket.recv_fds(conn, 8, 2)
        if len(msg) != 8 or len(fds) != 2:
            raise EOFError("incomplete job request")
        for fd, target in zip(fds, (1, 2)):
            os.dup2(fd, target)
            os.close(fd)
        request = pickle.loads(recv_exactly(conn, struct.unpack("!Q", msg)[0]))
        conn.close()
        become(request)
        resolve(request["call"])(pickle.loads(request["job"]))
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException as e:  # noqa: BLE001 - the job's error goes to its log; the exit code says it failed
        import traceback

        traceback.print_exc()
        code = 130 if isinstance(e, KeyboardInterrupt) else 1  # as Python ends on an uncaught Ctrl-C
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def become(request: dict) -> None:
    """Take the job's folder, environment and argv, and a fresh random state (as a new process has)."""
    import random

    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ[ENV_FORKED] = str(os.getppid())  # the job's log says it ran forked (runner.py)
    sys.argv = list(request["argv"])
    tempfile.tempdir = None  # re-read TMPDIR from the job's environment
    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()  # legacy global state: a fresh process seeds it from the OS too
    if "torch" in sys.modules:
        sys.modules["torch"].seed()  # the default generator: as random as a new process's, not the server's


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        raise SystemExit("usage: python -m nasstudy.zygote SOCKET PARENT_PID")
    with contextlib.suppress(OSError, AttributeError):  # Linux: end with the parent even if it is SIGKILLed
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    try:
        serve(args[0], int(args[1]))
    finally:  # its folder too (start() made it), also when Snakemake died without stop()
        remove_folder(args[0])


if __name__ == "__main__":
    main()
