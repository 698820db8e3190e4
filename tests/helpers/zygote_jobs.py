"""Jobs for tests/test_zygote.py: the fork server runs them as `helpers.zygote_jobs:<name>` (tests/ is on
its PYTHONPATH), the same as `nasstudy.runner:run_job` with a Snakemake object."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path


def describe(out: str) -> None:
    """Write what a job sees (folder, environment, argv, torch's default and seeded random state)."""
    import torch

    from nasstudy.utils import make_rng, seed_torch

    first = {"torch_initial_seed": torch.initial_seed(), "torch_default_draw": torch.rand(2).tolist()}
    seed_torch(7, "job", threads=1)
    info = {
        **first,
        "cwd": os.getcwd(),
        "value": os.environ.get("ZYGOTE_TEST_VALUE"),
        "argv0": Path(sys.argv[0]).name,
        "torch_threads": torch.get_num_threads(),
        "torch_seeded_draw": torch.rand(3).tolist(),
        "numpy_seeded_draw": make_rng(7, "job").random(3).tolist(),
        "threads_at_start": threading.active_count(),
        "pid": os.getpid(),
        "ppid": os.getppid(),
    }
    print("job stdout line", flush=True)
    print("job stderr line", file=sys.stderr, flush=True)
    Path(out).write_text(json.dumps(info, sort_keys=True))


def fail(message: str) -> None:
    raise RuntimeError(message)


def exit_with(code: int) -> None:
    sys.exit(code)


def kill_self(_: object) -> None:
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def wait_for_stop(marker: str) -> None:
    """Like a long stage: stop_on_signal, then work until SIGINT/SIGTERM; notes the stop in `marker`."""
    from nasstudy.run_guard import stop_on_signal

    stop_on_signal()
    Path(marker).write_text(str(os.getpid()))
    try:
        time.sleep(60)
    except KeyboardInterrupt as e:
        Path(marker).write_text(f"stopped: {e}")
        raise
