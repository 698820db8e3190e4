"""MLflow: one parent run per study, child runs nested under it with tags, params and metrics."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest

from nasstudy import mlflow_tracking as mt
from nasstudy import pipeline
from nasstudy.config import load_params


@pytest.fixture()
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    c = load_params()
    c["study"] = "unit"
    return c


def test_parent_run_is_created_once_and_reused(cfg: dict, tmp_path: Path) -> None:
    first = mt.ensure_study_run(cfg)
    second = mt.ensure_study_run(cfg)
    assert first == second
    assert (tmp_path / "mlflow.db").is_file()
    mt.finish_study_run(cfg, success=True)
    run = mt.client_for(cfg).get_run(first)
    assert run.info.status == "FINISHED"
    assert run.data.params["search.budget"] == "50"


def test_job_run_nests_under_parent_with_tags_and_metrics(cfg: dict, tmp_path: Path) -> None:
    parent = mt.ensure_study_run(cfg)
    f = tmp_path / "in.txt"
    f.write_text("hello")
    out = tmp_path / "out.json"
    out.write_text("{}")
    tracker = mt.start_job_run(
        cfg, "search", {"space": "initial", "method": "rea"}, {"search": {"budget": 5}}, {"x": [f]}
    )
    for epoch in range(3):
        tracker.log_metric("loss", 1.0 / (epoch + 1), step=epoch)
    tracker.log_artifact(out)
    mt.end_job_run(tracker, {"metrics": [out]}, success=True)
    client = mt.client_for(cfg)
    run = client.get_run(tracker.run_id)
    tags = run.data.tags
    assert tags["mlflow.parentRunId"] == parent
    assert run.info.run_name == "search[space=initial,method=rea]"
    assert tags["nasstudy.rule"] == "search"
    assert tags["input.x"].endswith("5d41402abc4b2a76b9719d911017c592")  # md5("hello")
    assert "output.metrics" in tags and "git.commit" in tags
    assert run.data.params["search.budget"] == "5"
    history = client.get_metric_history(tracker.run_id, "loss")
    assert [m.step for m in history] == [0, 1, 2]
    assert [a.path for a in client.list_artifacts(tracker.run_id)] == ["out.json"]


def test_tracking_uri_precedence(cfg: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    assert mt.tracking_uri(cfg).startswith("sqlite:///") and mt.tracking_uri(cfg).endswith("/mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert mt.tracking_uri(cfg) == "http://127.0.0.1:5999"
    cfg["tracking"]["uri"] = "sqlite:///elsewhere.db"
    assert mt.tracking_uri(cfg) == "sqlite:///elsewhere.db"


def test_flatten() -> None:
    assert mt.flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {"a.b": 1, "a.c.d": [1, 2], "e": {}}


def closed_port_uri() -> str:
    """http://127.0.0.1:<a port nobody listens on> (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_unreachable_server_stops_the_study_at_once(cfg: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg["tracking"]["uri"] = uri = closed_port_uri()
    start = time.perf_counter()
    with pytest.raises(mt.TrackingUnavailable, match=re.escape(uri)):
        mt.ensure_study_run(cfg)
    with pytest.raises(SystemExit) as e:
        pipeline.on_start(cfg)
    assert time.perf_counter() - start < 10  # no MLflow client retries (minutes) behind the probe
    assert e.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("tracking error: ") and uri in err
    assert "tracking.required: false" in err  # says how to fix it
    assert not (tmp_path / "mlflow.db").exists()


def test_optional_server_falls_back_to_the_local_store(
    cfg: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cfg["tracking"].update(uri=closed_port_uri(), required=False)
    parent = mt.ensure_study_run(cfg)
    warning = capsys.readouterr().err.splitlines()[0]  # then MLflow's own lines about the new database
    assert warning.startswith("warning: ") and cfg["tracking"]["uri"] in warning and "mlflow.db" in warning
    assert mt.effective_tracking_uri(cfg) == mt.local_uri() and (tmp_path / "mlflow.db").is_file()
    tracker = mt.start_job_run(cfg, "report", {}, {"x": 1}, {})
    mt.end_job_run(tracker, {}, success=True)
    assert mt.client_for(cfg).get_run(tracker.run_id).data.tags["mlflow.parentRunId"] == parent


def test_local_store_needs_no_probe(cfg: dict) -> None:
    assert mt.check_tracking_server(cfg) == mt.tracking_uri(cfg)
    assert cfg["tracking"]["required"] is True  # the schema's default
