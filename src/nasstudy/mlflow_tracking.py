"""MLflow for the study: one parent run per study, one child run per executed Snakemake job.

Per docs/design.md#tracking-and-records: default store `sqlite:///mlflow.db` in the project folder,
`MLFLOW_TRACKING_URI` or params `tracking.uri` point elsewhere. The parent run is created serially in
Snakemake's `onstart` (parallel first use of SQLite races); jobs find it by its tags. A job buffers its
metrics and a background thread writes them in batches every `tracking.flush_seconds` (and at the
end), so a job running for hours shows its epochs while parallel jobs hold the SQLite lock briefly.

Runs are queryable by plain tags: a job's `rule`, `study`, `seed` and one tag per wildcard
(`space`, `method`, `task`, `gen`, ...), e.g. `tags.space = 'nse' and tags.method = 'rea'`. The
parent's current params are tags `params.<key>` (MLflow params are immutable: they keep the first
run's values), with `nasstudy.params_hash` and one artifact `params/<hash>.yaml` per params version.

A tracking server (`http(s)://` URI) is probed before any job runs: when it does not answer, the
study stops with one line naming the URI, or, with params `tracking.required: false`, warns and
logs to the local SQLite store instead (so a laptop run does not need the lab's server).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from nasstudy.config import PROJECT_ROOT
from nasstudy.utils import file_md5

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

STUDY_TAG = "nasstudy.study"
ROLE_TAG = "nasstudy.role"
PARAMS_HASH_TAG = "nasstudy.params_hash"
PARAMS_TAG_PREFIX = "params."  # the parent's current params: tags params.<key>
DEFAULT_FLUSH_SECONDS = 10.0
T = TypeVar("T")


PROBE_TIMEOUT_S = 3.0
_probed: dict[str, str | None] = {}  # server URI -> None (answers) or why not; one probe per process


class TrackingUnavailable(RuntimeError):
    """The tracking server does not answer and `tracking.required` is true; the message says how to fix it."""


def local_uri(workdir: Path | None = None) -> str:
    """The project's own store: sqlite:///<workdir>/mlflow.db."""
    return f"sqlite:///{Path(workdir or os.getcwd()).resolve() / 'mlflow.db'}"


def tracking_uri(config: dict, workdir: Path | None = None) -> str:
    """params `tracking.uri`, else $MLFLOW_TRACKING_URI, else sqlite:///<workdir>/mlflow.db."""
    uri = (config.get("tracking") or {}).get("uri") or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or local_uri(workdir)


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def tracking_required(config: dict) -> bool:
    """params `tracking.required` (default true): must the configured server be reachable?"""
    return bool((config.get("tracking") or {}).get("required", True))


def probe_server(uri: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when the server at `uri` answers GET /health within `timeout` s, else why not (one line).

    A plain request with a short timeout: MLflow's own client retries for minutes before it fails."""
    if uri not in _probed:
        import requests

        try:
            r = requests.get(uri.rstrip("/") + "/health", timeout=timeout)
            _probed[uri] = None if r.ok else f"GET /health answered HTTP {r.status_code}"
        except requests.Timeout:
            _probed[uri] = f"no answer within {timeout:g} s"
        except requests.ConnectionError:
            _probed[uri] = "cannot connect"
        except requests.RequestException as e:
            _probed[uri] = type(e).__name__
    return _probed[uri]


def effective_tracking_uri(config: dict, workdir: Path | None = None) -> str:
    """Where runs go: the configured URI, or the local store when its server is down and not required."""
    uri = tracking_uri(config, workdir)
    if is_server(uri) and not tracking_required(config) and probe_server(uri) is not None:
        return local_uri(workdir)
    return uri


def check_tracking_server(config: dict, workdir: Path | None = None) -> str:
    """Probe a tracking server before any job runs; return the URI runs will go to.

    Unreachable and `tracking.required` true: TrackingUnavailable (one line: the URI and how to fix
    it). Unreachable and false: a one-line warning on stderr and the local SQLite store."""
    uri = tracking_uri(config, workdir)
    if not is_server(uri) or (why := probe_server(uri)) is None:
        return uri
    local = local_uri(workdir)
    if tracking_required(config):
        raise TrackingUnavailable(
            f"MLflow tracking server {uri} is unreachable ({why}); start it (mlflow server --host ... "
            f"--port ...), point params tracking.uri or MLFLOW_TRACKING_URI at a running server, or set "
            f"tracking.required: false to log to {local} instead"
        )
    if uri not in _warned:  # once per process: the start and the end (dvc commit's md5 check) both ask
        _warned.add(uri)
        warning = f"MLflow tracking server {uri} is unreachable ({why}); logging to {local} instead"
        print(f"warning: {warning} (tracking.required: false)", file=sys.stderr)
    return local


_warned: set[str] = set()


def client_for(config: dict):
    """An MlflowClient on the study's store (the local one where an optional server is down).
    Opening a SQLite store reads it, so a job starting while another writes can meet its lock too."""
    from mlflow.tracking import MlflowClient

    uri = effective_tracking_uri(config)
    return retry(lambda: MlflowClient(tracking_uri=uri))


def store_errors() -> tuple[type[BaseException], ...]:
    """What a store that cannot be used raises (a corrupt or locked SQLite file, a failing server)."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    return (MlflowException, SQLAlchemyError, sqlite3.Error, OSError)


def tracking_failure(uri: str, exc: BaseException) -> str:
    """One line for a store error: the URI, the cause's first line and what to do."""
    if isinstance(exc, TrackingUnavailable):
        return str(exc)
    cause = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if "locked" in cause.lower():
        hint = "another process holds its lock; run again when it is done"
    elif uri.startswith("sqlite:"):
        hint = "if the file is damaged, move it away (a new store is made; earlier runs stay in the old file)"
    else:
        hint = "check the server and MLFLOW_TRACKING_URI / params tracking.uri"
    return f"MLflow store {uri} cannot be used ({cause}); {hint}"


def retry(fn: Callable[[], T], attempts: int = 8) -> T:
    """SQLite answers 'database is locked' while another job writes: wait and try again."""
    for i in range(attempts):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - MLflow wraps SQLAlchemy errors in several types
            if "locked" not in str(e).lower() or i == attempts - 1:
                raise
            time.sleep(0.2 * 2**i)
    raise AssertionError("unreachable")


def experiment_id(client, name: str) -> str:
    exp = retry(lambda: client.get_experiment_by_name(name))
    if exp is not None:
        return exp.experiment_id
    return retry(lambda: client.create_experiment(name))


def find_study_run(client, exp_id: str, study: str):
    runs = retry(
        lambda: client.search_runs(
            [exp_id],
            filter_string=f"tags.`{ROLE_TAG}` = 'study' and tags.`{STUDY_TAG}` = '{study}'",
            max_results=1,
        )
    )
    return runs[0] if runs else None


def ensure_study_run(config: dict) -> str:
    """The parent run of `config['study']`, created on first use; marked RUNNING while jobs run.
    Probes a tracking server first (check_tracking_server), so a dead one stops the study at once."""
    check_tracking_server(config)
    client = client_for(config)
    exp_id = experiment_id(client, config["tracking"]["experiment"])
    run = find_study_run(client, exp_id, config["study"])
    if run is None:
        tags = {
            STUDY_TAG: config["study"], ROLE_TAG: "study", "study": config["study"],
            "mlflow.runName": f"study:{config['study']}",
        }  # fmt: skip
        run = retry(lambda: client.create_run(exp_id, tags=tags, run_name=f"study:{config['study']}"))
        try:
            log_params(client, run.info.run_id, flatten(config))
            record_params_version(client, run.info.run_id, config, {})
        except BaseException:  # a start that fails must not leave the parent run RUNNING
            with contextlib.suppress(Exception):
                client.set_terminated(run.info.run_id, "FAILED")
            raise
    else:
        retry(lambda: client.update_run(run.info.run_id, status="RUNNING"))
        record_params_version(client, run.info.run_id, config, run.data.tags)
    return run.info.run_id


def params_hash(config: dict) -> str:
    """16 hex digits that change whenever any params value does (keys in any order)."""
    flat = {k: param_text(v) for k, v in flatten(config).items()}
    return hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()[:16]


def record_params_version(client, run_id: str, config: dict, tags: dict[str, str]) -> bool:
    """Make the parent run's tags `params.<key>` hold `config`'s current values when they changed since
    the last start (its `nasstudy.params_hash` differs), and keep this version as artifact
    params/<hash>.yaml; MLflow params cannot be changed, so they keep the first run's values.
    Returns whether a new version was recorded."""
    import yaml

    digest = params_hash(config)
    if tags.get(PARAMS_HASH_TAG) == digest:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{digest}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        retry(lambda: client.log_artifact(run_id, str(path), artifact_path="params"))
    current = {PARAMS_TAG_PREFIX + k: param_text(v) for k, v in flatten(config).items()}
    for stale in sorted(k for k in tags if k.startswith(PARAMS_TAG_PREFIX) and k not in current):
        retry(lambda k=stale: client.delete_tag(run_id, k))  # a key the new params no longer have
    set_tags(client, run_id, current)
    set_tags(client, run_id, {PARAMS_HASH_TAG: digest})  # last: a start that fails here records again
    return True


def finish_study_run(config: dict, success: bool) -> None:
    client = client_for(config)
    exp = retry(lambda: client.get_experiment_by_name(config["tracking"]["experiment"]))
    run = exp and find_study_run(client, exp.experiment_id, config["study"])
    if run:
        retry(lambda: client.set_terminated(run.info.run_id, "FINISHED" if success else "FAILED"))


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{'search': {'budget': 60}} -> {'search.budget': 60}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def param_text(value: Any) -> str:
    """How a params value is stored in MLflow: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def log_params(client, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, param_text(v)) for k, v in sorted(params.items())]
    for i in range(0, len(items), 100):
        retry(lambda chunk=items[i : i + 100]: client.log_batch(run_id, params=chunk))


def set_tags(client, run_id: str, tags: dict[str, str]) -> None:
    from mlflow.entities import RunTag

    items = [RunTag(k, str(v)[:5000]) for k, v in sorted(tags.items())]
    for i in range(0, len(items), 100):
        retry(lambda chunk=items[i : i + 100]: client.log_batch(run_id, tags=chunk))


def git_state(root: Path = PROJECT_ROOT) -> dict[str, str]:
    """The code version: commit and whether the tree had uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        return {"git.commit": commit, "git.dirty": str(bool(dirty)).lower()}
    except (OSError, subprocess.CalledProcessError):
        return {"git.commit": "unknown", "git.dirty": "unknown"}


def file_tags(kind: str, files: dict[str, list[Path]]) -> dict[str, str]:
    """One tag per file: `input.cls_train` -> 'results/.../cls_train.npz md5'."""
    tags = {}
    for name, paths in files.items():
        for i, p in enumerate(paths):
            key = f"{kind}.{name}" + (f".{i}" if len(paths) > 1 else "")
            tags[key] = f"{p} {file_md5(p) if Path(p).is_file() else 'missing'}"
    return tags


class MlflowTracker:
    """A Tracker that buffers params and metrics and writes them in batches to one MLflow run: every
    `flush_seconds` from a background thread (so a long job's epochs show while it runs), and at close().
    Artifacts are uploaded at close()."""

    def __init__(self, client, run_id: str, flush_seconds: float = DEFAULT_FLUSH_SECONDS) -> None:
        self.client, self.run_id, self.flush_seconds = client, run_id, float(flush_seconds)
        self.params: dict[str, Any] = {}
        self.metrics: list = []
        self.artifacts: list[Path] = []
        self._buffer = threading.Lock()  # guards params and metrics
        self._writing = threading.Lock()  # one batch write at a time, in logging order
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._flush_loop, name="mlflow-flush", daemon=True)
        self._thread.start()

    def log_params(self, params: dict) -> None:
        with self._buffer:
            self.params.update(flatten(params))

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        from mlflow.entities import Metric

        with self._buffer:
            self.metrics.append(Metric(key, float(value), int(time.time() * 1000), int(step or 0)))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        for k, v in metrics.items():
            self.log_metric(k, v, step)

    def log_artifact(self, path: str | Path) -> None:
        self.artifacts.append(Path(path))

    def _flush_loop(self) -> None:
        warned = False
        while not self._stop.wait(self.flush_seconds):
            try:
                self.flush_buffered()
            except Exception as e:  # noqa: BLE001 - a store hiccup must not stop training; close() writes again
                if not warned:
                    print(f"warning: MLflow metrics not written yet ({type(e).__name__}); retrying", file=sys.stderr)
                    warned = True

    def flush_buffered(self) -> None:
        """Write the buffered params and metrics now; on a failure they stay buffered for the next try."""
        with self._writing:
            with self._buffer:
                params, metrics = self.params, self.metrics
                self.params, self.metrics = {}, []
            try:
                if params:
                    log_params(self.client, self.run_id, params)
                    params = {}
                while metrics:  # MLflow takes at most 1000 metrics per batch
                    retry(lambda chunk=metrics[:1000]: self.client.log_batch(self.run_id, metrics=chunk))
                    metrics = metrics[1000:]
            except BaseException:
                with self._buffer:
                    self.params, self.metrics = {**params, **self.params}, metrics + self.metrics
                raise

    def close(self) -> None:
        """Stop the background writer, then write everything left, artifacts included."""
        self._stop.set()
        self._thread.join()
        self.flush_buffered()
        for p in self.artifacts:
            if p.is_file():
                retry(lambda p=p: self.client.log_artifact(self.run_id, str(p)))
        self.artifacts = []


def start_job_run(
    config: dict, rule: str, wildcards: dict[str, str], params: dict, inputs: dict[str, list[Path]]
) -> MlflowTracker:
    """A child run `rule[wildcards]` under the study's parent run, tagged with what identifies the job."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    client = client_for(config)
    exp_id = experiment_id(client, config["tracking"]["experiment"])
    parent = find_study_run(client, exp_id, config["study"])
    wc = ",".join(f"{k}={v}" for k, v in wildcards.items())
    name = f"{rule}[{wc}]" if wc else rule
    params_json = json.dumps(params, sort_keys=True, default=str)
    tags = {
        STUDY_TAG: config["study"],
        ROLE_TAG: "job",
        "nasstudy.rule": rule,
        "nasstudy.wildcards": json.dumps(wildcards, sort_keys=True),
        PARAMS_HASH_TAG: hashlib.sha256(params_json.encode()).hexdigest()[:16],
        **git_state(),
        **file_tags("input", inputs),
        **query_tags(config, rule, wildcards, params),
    }
    if parent is not None:
        tags[MLFLOW_PARENT_RUN_ID] = parent.info.run_id
    run = retry(lambda: client.create_run(exp_id, tags=tags, run_name=name))
    flush_seconds = (config.get("tracking") or {}).get("flush_seconds", DEFAULT_FLUSH_SECONDS)
    tracker = MlflowTracker(client, run.info.run_id, flush_seconds)
    tracker.log_params(params)
    return tracker


def query_tags(config: dict, rule: str, wildcards: dict[str, str], params: dict) -> dict[str, str]:
    """Plain tags to search runs by: `rule`, `study`, `seed` (the job's) and one per wildcard
    (`space`, `method`, `task`, `gen`, `rep`, ...). A wildcard named like one of the first three
    becomes `wildcard.<name>` so that it cannot hide them."""
    base = {"rule": rule, "study": str(config["study"]), "seed": str(params.get("seed", config.get("seed")))}
    return {**{k if k not in base else f"wildcard.{k}": str(v) for k, v in wildcards.items()}, **base}


def end_job_run(tracker: MlflowTracker, outputs: dict[str, list[Path]], success: bool) -> None:
    tracker.close()
    if success:
        set_tags(tracker.client, tracker.run_id, file_tags("output", outputs))
    retry(lambda: tracker.client.set_terminated(tracker.run_id, "FINISHED" if success else "FAILED"))
