"""`nasstudy lineage`: the chain of MLflow job runs behind a file, every hash checked again.

Fast tests write runs into a real SQLite MLflow store the way the study's jobs do
(mlflow_tracking.start_job_run / end_job_run); the slow one runs the tiny study for real.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nasstudy import cli, lineage
from nasstudy import mlflow_tracking as mt
from nasstudy.config import load_params

BIN = Path(sys.executable).parent
RES = "results/unit"


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite store with its tables made once (that takes seconds); each test gets a copy."""
    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture()
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_store: Path) -> dict:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    c = load_params()
    c["study"] = "unit"
    mt.ensure_study_run(c)
    return c


def job(cfg: dict, rule: str, inputs: dict[str, str], outputs: dict[str, str], success: bool = True, **wc: str) -> str:
    """One job as the runner records it: inputs tagged at the start, outputs written, then tagged."""
    tracker = mt.start_job_run(cfg, rule, wc, {rule: {"knob": 3}}, {k: [Path(v)] for k, v in inputs.items()})
    for name, path in outputs.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(f"{rule} {name} {wc} {tracker.run_id}\n")
    mt.end_job_run(tracker, {k: [Path(v)] for k, v in outputs.items()}, success=success)
    return tracker.run_id


@pytest.fixture()
def chain(cfg: dict) -> dict[str, str]:
    """prepare_data -> search[initial, rea] -> retrain[initial, rea] (which also reads the data)."""
    data = f"{RES}/data/cls_train.npz"
    best = f"{RES}/search/initial/rea/best.json"
    model = f"{RES}/retrain/initial/rea/model.pt"
    ids = {"prepare_data": job(cfg, "prepare_data", {}, {"cls_train": data, "summary": f"{RES}/data/summary.json"})}
    ids["search"] = job(cfg, "search", {"cls_train": data}, {"best": best}, space="initial", method="rea")
    ids["retrain"] = job(
        cfg, "retrain", {"cls_train": data, "best": best}, {"model": model}, space="initial", method="rea"
    )
    return {**ids, "data": data, "best": best, "model": model}


def test_chain_reaches_the_data_and_every_file_verifies(cfg: dict, chain: dict[str, str]) -> None:
    result = lineage.lineage(chain["model"], cfg)
    nodes = result["nodes"]
    assert [n["rule"] for n in nodes] == ["retrain", "search", "prepare_data"]  # prepare_data once, not twice
    assert [n["run_id"] for n in nodes] == [chain["retrain"], chain["search"], chain["prepare_data"]]
    retrain = nodes[0]
    assert retrain["wildcards"] == {"space": "initial", "method": "rea"}
    assert retrain["params"]["retrain.knob"] == "3" and len(retrain["params_hash"]) == 16
    code = mt.git_state()
    assert (retrain["git_commit"], retrain["git_dirty"]) == (code["git.commit"], code["git.dirty"])
    assert retrain["start_time"] <= retrain["end_time"]
    producers = {r["path"]: r["producer"] for r in retrain["inputs"]}
    assert producers == {chain["best"]: chain["search"], chain["data"]: chain["prepare_data"]}
    assert nodes[2]["inputs"] == []  # the data: nothing before it
    assert result["flagged"] == []
    assert all(r["status"] == "ok" for n in nodes for r in (*n["inputs"], *n["outputs"]))
    text = lineage.render(result)
    assert "retrain[space=initial,method=rea]" in text and "└─ search[space=initial,method=rea]" in text
    assert "shown above" in text and text.rstrip().endswith("match their recorded md5")


def test_changed_and_missing_files_are_flagged(cfg: dict, chain: dict[str, str], capsys) -> None:
    Path(chain["best"]).write_text('{"arch": "edited by hand"}\n')
    result = lineage.lineage(chain["model"], cfg)
    assert result["flagged"] == [chain["best"]]
    best = result["nodes"][1]["outputs"][0]
    assert best["status"] == "CHANGED" and best["disk_md5"] != best["md5"]
    assert cli.main(["lineage", chain["model"]]) == 1
    out = capsys.readouterr().out
    assert "CHANGED  " + chain["best"] in out and "FLAGGED 1 of" in out
    Path(chain["data"]).unlink()
    result = lineage.lineage(chain["model"], cfg)
    assert result["flagged"] == sorted([chain["best"], chain["data"]])
    assert {r["status"] for n in result["nodes"] for r in n["inputs"] if r["path"] == chain["data"]} == {"MISSING"}


def test_latest_finished_producer_is_taken_and_inputs_follow_their_md5(cfg: dict, chain: dict[str, str]) -> None:
    rerun = job(cfg, "search", {"cls_train": chain["data"]}, {"best": chain["best"]}, space="initial", method="rea")
    assert lineage.lineage(chain["best"], cfg)["nodes"][0]["run_id"] == rerun
    # model.pt was made from the first search's best.json: its chain names that run (matched by md5),
    # and flags the file, which the rerun has overwritten since.
    old = lineage.lineage(chain["model"], cfg)
    assert old["nodes"][1]["run_id"] == chain["search"] and old["flagged"] == [chain["best"]]
    # a failed job tags no outputs: it is nobody's producer, and what it left behind is flagged
    job(cfg, "search", {"cls_train": chain["data"]}, {"best": chain["best"]}, success=False, space="i", method="r")
    result = lineage.lineage(chain["best"], cfg)
    assert result["nodes"][0]["run_id"] == rerun and result["flagged"] == [chain["best"]]


def test_path_forms_and_json(cfg: dict, chain: dict[str, str], tmp_path: Path, capsys) -> None:
    for form in (f"./{chain['model']}", str(tmp_path / chain["model"]), chain["model"].replace("/rea/", "/x/../rea/")):
        assert lineage.lineage(form, cfg)["path"] == chain["model"]
    assert cli.main(["lineage", "--json", chain["model"]]) == 0
    nodes = json.loads(capsys.readouterr().out)
    assert [n["rule"] for n in nodes] == ["retrain", "search", "prepare_data"]
    assert {"run_id", "start_time", "end_time", "git_commit", "params", "inputs", "outputs"} <= set(nodes[0])
    assert nodes[0]["outputs"][0] | {"status": "ok"} == nodes[0]["outputs"][0]


def test_unrecorded_path_is_one_line_and_exit_2(cfg: dict, chain: dict[str, str], capsys) -> None:
    assert cli.main(["lineage", f"{RES}/nothing.json"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no MLflow job run recorded results/unit/nothing.json" in err
    assert "--params" in err
    Path("other.yaml").write_text("tracking: {experiment: never-used}\n")
    assert cli.main(["lineage", "--params", "other.yaml", chain["model"]]) == 2
    assert "no MLflow experiment 'never-used'" in capsys.readouterr().err


def test_dvc_record_of_each_phase(cfg: dict, chain: dict[str, str]) -> None:
    """A real DVC repo: which dvc.yaml stage holds each file, and whether dvc.lock still matches it."""
    Path("dvc.yaml").write_text(
        "stages:\n"
        f"  prepare_data: {{cmd: 'true', outs: [{RES}/data]}}\n"
        f"  search: {{cmd: 'true', deps: [{RES}/data], outs: [{RES}/search]}}\n"
    )
    for cmd in (["git", "init", "-q"], [BIN / "dvc", "init", "-q"], [BIN / "dvc", "commit", "-f", "-q"]):
        subprocess.run(cmd, check=True, capture_output=True)
    result = lineage.lineage(chain["model"], cfg)
    assert set(result["dvc"]) == {"prepare_data", "search"}
    assert result["dvc"]["search"]["state"] == "matches dvc.lock" and result["dvc"]["search"]["lock_md5"]
    search = result["nodes"][1]
    assert search["dvc"]["search"]["out"] == f"{RES}/search"
    assert search["outputs"][0]["dvc_md5"] == search["outputs"][0]["md5"]
    assert result["nodes"][0]["dvc"] == {}  # retrain/ is in no dvc.yaml stage here
    Path(chain["best"]).unlink()  # a new file, not a write into what may be DVC's cache object
    Path(chain["best"]).write_text("{}\n")
    changed = lineage.lineage(chain["model"], cfg)
    assert changed["dvc"]["search"]["state"].startswith("CHANGED since dvc.lock")
    assert "dvc     stage search" in lineage.render(changed)


@pytest.mark.slow
def test_tiny_study_lineage_then_a_hand_edit(study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real tiny study (conftest's, copied so that it can be edited): every retrained model traces
    back to prepare_data with every file verified; a hand edit of one search result is flagged, and
    Snakemake would rerun exactly what depends on it."""
    from helpers.e2e import planned_jobs

    project = Path(shutil.copytree(study, tmp_path / "study", symlinks=True))
    assert planned_jobs(project) == set()  # the copy is a complete, up-to-date study
    monkeypatch.chdir(project)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_params(None, project / "params" / "default.yaml")
    for space in cfg["search"]["spaces"]:
        for method in cfg["search"]["methods"]:
            result = lineage.lineage(f"results/default/retrain/{space}/{method}/rep0/model.pt", cfg)
            rules = [n["rule"] for n in result["nodes"]]
            assert rules[:2] == ["retrain", "search"] and {"warmup_supernet", "prepare_data"} <= set(rules)
            sources = {n["rule"] for n in result["nodes"] if not any(r["producer"] for r in n["inputs"])}
            assert sources == {"prepare_data", "init_space"}  # the chain ends at the data (and the first space)
            assert ("evolve_space" in rules) == (space != "initial")
            assert result["flagged"] == [], result["flagged"]
            assert {p["state"] for p in result["dvc"].values()} == {"matches dvc.lock"}, result["dvc"]
    model = "results/default/retrain/nse/rea/rep0/model.pt"
    shown = subprocess.run([BIN / "nasstudy", "lineage", model], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert "evolve_space[method=nse,gen=2]" in shown.stdout and "verified: all" in shown.stdout

    best = project / "results/default/search/initial/rea/rep0/best.json"
    edited = json.dumps({**json.loads(best.read_text()), "supernet_acc": 99.9})
    best.unlink()  # as an editor saves it: a new file (the old one is read-only, and may be DVC's cache object)
    best.write_text(edited)
    result = lineage.lineage("results/default/retrain/initial/rea/rep0/model.pt", cfg)
    assert result["flagged"] == ["results/default/search/initial/rea/rep0/best.json"]
    assert result["dvc"]["search"]["state"].startswith("CHANGED since dvc.lock")
    shown = subprocess.run([BIN / "nasstudy", "lineage", "--json", str(project / model)], capture_output=True)
    assert shown.returncode == 0  # another (space, method): untouched
    assert planned_jobs(project) == {
        ("retrain", "space=initial, method=rea, rep=0"),
        ("transfer", "task=detection, space=initial, method=rea"),
        ("transfer", "task=segmentation, space=initial, method=rea"),
        ("report", ""),
    }
