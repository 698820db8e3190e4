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
from nasstudy.tracking import log_cost, log_epoch


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
    assert run.data.params["search.budget"] == str(cfg["search"]["budget"])


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


def make_job(cfg: dict, rule: str, **wildcards: str) -> str:
    tracker = mt.start_job_run(cfg, rule, wildcards, {"seed": cfg["seed"]}, {})
    mt.end_job_run(tracker, {}, success=True)
    return tracker.run_id


def test_job_runs_are_found_by_plain_tags(cfg: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tags rule, study, seed and one per wildcard: mlflow.search_runs on a real SQLite store finds exactly
    the runs of one (space, method), whatever the rule."""
    import mlflow

    cfg["seed"] = 7
    mt.ensure_study_run(cfg)
    wanted = {
        make_job(cfg, "search", space="nse", method="rea"),
        make_job(cfg, "retrain", space="nse", method="rea"),
        make_job(cfg, "transfer", task="detection", space="nse", method="rea"),
    }
    make_job(cfg, "search", space="nse", method="random")
    make_job(cfg, "search", space="initial", method="rea")
    make_job(cfg, "evolve_space", method="nse", gen="1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mt.local_uri())
    found = mlflow.search_runs(
        experiment_names=["nasstudy"], filter_string="tags.space = 'nse' and tags.method = 'rea'"
    )
    assert set(found["run_id"]) == wanted
    retrain = mlflow.search_runs(experiment_names=["nasstudy"], filter_string="tags.rule = 'retrain'")
    assert len(retrain) == 1 and retrain["tags.seed"][0] == "7" and retrain["tags.study"][0] == "unit"
    gen = mlflow.search_runs(experiment_names=["nasstudy"], filter_string="tags.gen = '1' and tags.method = 'nse'")
    assert list(gen["tags.rule"]) == ["evolve_space"]


def test_a_wildcard_cannot_hide_the_base_tags() -> None:
    tags = mt.query_tags({"study": "s", "seed": 3}, "search", {"seed": "2", "space": "nse"}, {"seed": 3})
    assert tags == {"rule": "search", "study": "s", "seed": "3", "wildcard.seed": "2", "space": "nse"}


def test_metrics_reach_the_store_while_the_job_runs(cfg: dict) -> None:
    """Within tracking.flush_seconds, a second client reads a running job's metric history."""
    from mlflow.tracking import MlflowClient

    cfg["tracking"]["flush_seconds"] = 0.5
    mt.ensure_study_run(cfg)
    tracker = mt.start_job_run(cfg, "retrain", {"space": "nse", "method": "rea"}, {"seed": 0}, {})
    other = MlflowClient(tracking_uri=mt.local_uri())
    for epoch in (1, 2):
        tracker.log_metrics({"train_loss": 1.0 / epoch, "val_acc": 30.0 + epoch}, step=epoch)
        start, history = time.monotonic(), []
        while time.monotonic() - start < 10 and len(history) < epoch:
            time.sleep(0.1)
            history = other.get_metric_history(tracker.run_id, "val_acc")
        assert [(m.step, m.value) for m in history] == [(s, 30.0 + s) for s in range(1, epoch + 1)]
        assert time.monotonic() - start < 0.5 + 2.0  # the flush interval, plus slack for a busy machine
    assert other.get_run(tracker.run_id).data.params["seed"] == "0"  # params go with the first flush
    assert other.get_run(tracker.run_id).info.status == "RUNNING"
    mt.end_job_run(tracker, {}, success=True)
    assert [m.step for m in other.get_metric_history(tracker.run_id, "train_loss")] == [1, 2]


def test_metrics_kept_when_a_write_fails(cfg: dict) -> None:
    """A failed batch write (here: the run is deleted meanwhile) keeps the metrics buffered, in order,
    for the next flush."""
    from mlflow.exceptions import MlflowException

    mt.ensure_study_run(cfg)
    tracker = mt.start_job_run(cfg, "report", {}, {}, {})
    tracker.log_metric("a", 1.0, step=1)
    tracker.client.delete_run(tracker.run_id)
    with pytest.raises(MlflowException):
        tracker.flush_buffered()
    tracker.client.restore_run(tracker.run_id)
    tracker.log_metric("a", 2.0, step=2)
    mt.end_job_run(tracker, {}, success=True)
    history = mt.client_for(cfg).get_metric_history(tracker.run_id, "a")
    assert sorted((m.step, m.value) for m in history) == [(1, 1.0), (2, 2.0)]


def test_log_epoch_and_log_cost(cfg: dict, capsys: pytest.CaptureFixture) -> None:
    """One job-log line per epoch; an arch's flops and params as metrics (filterable numbers)."""
    mt.ensure_study_run(cfg)
    tracker = mt.start_job_run(cfg, "retrain", {"space": "nse", "method": "rea"}, {}, {})
    log_epoch(tracker, "retrain", 2, 4, {"train_loss": 0.81234, "val_acc": 61.25})
    log_epoch(tracker, "warmup", 1, 3, {"train_loss": 1.5}, step=0)
    log_cost(tracker, {"flops": 2_500_000, "params": 41_000, "arch": "x"})
    mt.end_job_run(tracker, {}, success=True)
    lines = capsys.readouterr().out.splitlines()
    assert "[nasstudy] retrain epoch 2/4 train_loss=0.8123 val_acc=61.25" in lines
    assert "[nasstudy] warmup epoch 1/3 train_loss=1.5" in lines
    client = mt.client_for(cfg)
    history = client.get_metric_history(tracker.run_id, "train_loss")
    assert sorted((m.step, m.value) for m in history) == [(0, 1.5), (2, 0.81234)]
    run = client.get_run(tracker.run_id)
    assert run.data.metrics["flops"] == 2_500_000 and run.data.metrics["params"] == 41_000
    found = client.search_runs([run.info.experiment_id], filter_string="metrics.flops < 3000000")
    assert [r.info.run_id for r in found] == [tracker.run_id]


def test_parent_run_records_each_params_version(cfg: dict) -> None:
    """A rerun with changed params: the parent's tags params.<key> hold the new values, its hash tag
    changes and params/<hash>.yaml keeps each version; the immutable MLflow params keep the first."""
    import yaml

    old_budget = str(cfg["search"]["budget"])
    first = mt.ensure_study_run(cfg)
    client = mt.client_for(cfg)
    tags = client.get_run(first).data.tags
    old_hash = tags[mt.PARAMS_HASH_TAG]
    assert tags["params.search.budget"] == old_budget and tags["study"] == "unit"
    assert mt.ensure_study_run(cfg) == first  # unchanged params: nothing new
    assert [a.path for a in client.list_artifacts(first, "params")] == [f"params/{old_hash}.yaml"]

    cfg["search"]["budget"] = 60
    cfg["retrain"]["latency_batches"] = 5
    assert mt.ensure_study_run(cfg) == first
    run = client.get_run(first)
    new_hash = run.data.tags[mt.PARAMS_HASH_TAG]
    assert new_hash != old_hash and new_hash == mt.params_hash(cfg)
    assert run.data.tags["params.search.budget"] == "60" and run.data.tags["params.retrain.latency_batches"] == "5"
    assert run.data.params["search.budget"] == old_budget  # MLflow params are immutable
    paths = sorted(a.path for a in client.list_artifacts(first, "params"))
    assert paths == sorted([f"params/{old_hash}.yaml", f"params/{new_hash}.yaml"])
    saved = yaml.safe_load(Path(client.download_artifacts(first, f"params/{new_hash}.yaml")).read_text())
    assert saved["search"]["budget"] == 60

    del cfg["retrain"]["latency_batches"]  # a key that went away loses its tag
    mt.ensure_study_run(cfg)
    assert "params.retrain.latency_batches" not in client.get_run(first).data.tags


def test_params_hash_ignores_key_order() -> None:
    assert mt.params_hash({"a": 1, "b": {"c": [1, 2]}}) == mt.params_hash({"b": {"c": [1, 2]}, "a": 1})
    assert mt.params_hash({"a": 1}) != mt.params_hash({"a": 2})
