"""End to end: the real Snakemake DAG on tiny params in a temp copy of the project (git + DVC + MLflow).

One tiny study run (conftest.py's `study`, a minute or two on 2 cores) is shared by the e2e tests.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers.e2e import BIN, ROOT, TINY, make_project, metrics_files, planned_jobs, snakemake

pytestmark = pytest.mark.slow
__all__ = ["make_project", "planned_jobs", "snakemake"]  # other e2e tests import them from here too


def test_study_writes_every_stage_and_the_report(study: Path) -> None:
    res = study / "results" / "default"
    for rel in ("data/cls_train.npz", "space/gen0/space_state.json", "space/nse/gen2/front.csv",
                "supernet/initial/supernet.pt", "supernet/nse/random_archs.csv",
                "search/nse/rea/rep0/best.json", "retrain/initial/random/rep0/model.pt",
                "transfer/detection/initial/rea/metrics.json", "transfer/segmentation/nse/random/metrics.json",
                "transfer/detection/nse/rea/examples.png", "search/initial/relativenas/rep0/state.json",
                "ranking/initial/sample.csv", "ranking/nse/arch1/metrics.json", "ranking/nse/arch1/curve.csv",
                "report/summary.md", "report/pareto.png"):  # fmt: skip
        assert (res / rel).is_file(), rel
    table = (res / "report" / "summary.csv").read_text().splitlines()
    assert len(table) == 1 + 10  # header + 2 spaces x 5 methods
    # rows in the params' order of methods (rules/report.smk passed none: they came out alphabetically)
    methods = [line.split(",")[1] for line in table[1:6]]
    assert methods == ["random", "rea", "relativenas", "ganas", "weaknas"]
    for name in ("summary.html", "summary.json", "replicates.csv"):
        assert (res / "report" / name).is_file(), name
    report = json.loads((res / "report" / "report.json").read_text())
    assert "kendall_tau" in report
    assert (study / "logs" / "default" / "search" / "initial" / "rea" / "rep0.log").is_file()
    assert not (res / "search" / "initial" / "rea" / "rep1").exists()  # tiny: one replicate


def test_rerun_has_nothing_to_do_and_dvc_is_clean(study: Path) -> None:
    assert planned_jobs(study) == set()
    assert (study / "dvc.lock").is_file()
    status = subprocess.run([BIN / "dvc", "status", "--json"], cwd=study, capture_output=True, text=True)
    assert status.returncode == 0 and json.loads(status.stdout) == {}, status.stdout
    dag = subprocess.run([BIN / "dvc", "dag", "--md"], cwd=study, capture_output=True, text=True)
    for phase in ("prepare_data", "evolve_space", "warmup_supernet", "search", "retrain", "ranking", "transfer",
                  "report"):  # fmt: skip
        assert phase in dag.stdout


def test_mlflow_has_parent_and_one_child_per_job(study: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{study / 'mlflow.db'}")
    exp = client.get_experiment_by_name("nasstudy")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("nasstudy.role") == "study"]
    children = [r for r in runs if r.data.tags.get("nasstudy.role") == "job"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    # 1 prepare, 1 init, 2 evolve, 2 warmup, 10 search, 10 retrain (1 replicate), 2 ranking samples,
    # 4 ranking retrains (2 archs x 2 spaces), 8 transfer, 1 report
    assert len(children) == 41
    names = {r.info.run_name for r in children}
    assert "search[space=nse,method=rea,rep=0]" in names and "evolve_space[method=nse,gen=2]" in names
    methods = ("random", "rea", "relativenas", "ganas", "weaknas")
    assert {f"search[space=nse,method={m},rep=0]" for m in methods} <= names
    assert {"ranking_sample[space=nse]", "ranking[space=nse,index=1]"} <= names
    for r in children:
        assert r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert r.info.status == "FINISHED"
        assert r.data.metrics, r.info.run_name
        assert any(k.startswith("output.") for k in r.data.tags)
    warmup = next(r for r in children if r.info.run_name == "warmup_supernet[space=initial]")
    assert warmup.data.params["supernet.epochs"] == "1"


def test_changing_one_search_param_reruns_only_its_downstream(study: Path) -> None:
    params = study / "params" / "default.yaml"
    original = params.read_text()
    cfg = yaml.safe_load(original)
    cfg["search"]["rea"]["tournament"] = 3
    params.write_text(yaml.safe_dump(cfg))
    try:
        jobs = planned_jobs(study)
    finally:
        params.write_text(original)
    expected = {("search", "space=initial, method=rea, rep=0"), ("search", "space=nse, method=rea, rep=0"),
                ("retrain", "space=initial, method=rea, rep=0"), ("retrain", "space=nse, method=rea, rep=0"),
                ("transfer", "task=detection, space=initial, method=rea"),
                ("transfer", "task=detection, space=nse, method=rea"),
                ("transfer", "task=segmentation, space=initial, method=rea"),
                ("transfer", "task=segmentation, space=nse, method=rea"),
                ("report", "")}  # fmt: skip
    assert jobs == expected


def test_a_second_replicate_doubles_search_and_retrain_only(tmp_path: Path) -> None:
    """`replicates: 2` (dry run): a rep1 search and retrain beside every rep0 one; the other jobs, and
    transfer (which takes replicate 0's model), are the same as with one replicate."""
    project = make_project(tmp_path)
    one = planned_jobs(project)
    overlay = tmp_path / "two.yaml"
    overlay.write_text("replicates: 2\n")
    two = planned_jobs(project, "--configfile", str(overlay))
    rep1 = {(rule, wc) for rule, wc in two if wc.endswith("rep=1")}
    assert two - rep1 == one
    assert rep1 == {(rule, wc.replace("rep=0", "rep=1")) for rule, wc in one if rule in ("search", "retrain")}
    assert len(rep1) == 20  # 2 spaces x 5 methods, search and retrain
    out = snakemake(project, "--dry-run", "--configfile", str(overlay))
    for path in ("search/nse/rea/rep1/best.json", "retrain/initial/weaknas/rep1/metrics.json"):
        assert f"results/default/{path}" in out.stdout


def test_two_runs_from_scratch_give_identical_metrics(study: Path, tmp_path: Path) -> None:
    """Two runs of the tiny study in two fresh projects, both forking their jobs from a fork server (a
    new one each): the same metrics. Jobs started as their own processes (NASSTUDY_ZYGOTE=0) end with
    these metrics too: tests/test_crash_resume.py and tests/test_slurm.py compare such runs with `study`."""
    again = make_project(tmp_path)
    out = snakemake(again)
    assert out.returncode == 0, out.stderr[-4000:]
    for project in (study, again):
        forked = [p for p in (project / "logs").rglob("*.log") if "starting (forked from" in p.read_text()]
        assert len(forked) == 41, f"{project}: the jobs were not forked from the fork server"
    first, second = metrics_files(study), metrics_files(again)
    assert len(first) >= 20
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []
    # ... and dvc.lock records the same hash for every metrics file (through its phase folder's manifest).
    lock1, lock2 = dvc_file_hashes(study), dvc_file_hashes(again)
    metrics = sorted(k for k in lock1 if k.endswith("metrics.json"))
    assert len(metrics) == len(first)
    assert [k for k in metrics if lock1[k] != lock2.get(k)] == []


def dvc_file_hashes(project: Path) -> dict[str, str]:
    """path -> md5 of every file dvc.lock records, read through the `.dir` manifests in the DVC cache."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    hashes = {}
    for stage in lock["stages"].values():
        for out in stage.get("outs", []):
            md5 = out["md5"]
            if not md5.endswith(".dir"):
                hashes[out["path"]] = md5
                continue
            manifest = project / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
            for entry in json.loads(manifest.read_text()):
                hashes[f"{out['path']}/{entry['relpath']}"] = entry["md5"]
    return hashes


SHARED = ROOT.parent / "shared" / "data"


@pytest.mark.skipif(not (SHARED / "cifar10" / "train.npz").is_file(), reason="../shared/data not present")
def test_real_data_study_runs_end_to_end(tmp_path: Path) -> None:
    """Real CIFAR-10 images for search and retrain, real COCO scenes for transfer, through the real DAG
    (one space and one method, tiny sizes: the full-size run is benchmarks/bench_cifar10.py)."""
    project = make_project(tmp_path)
    cfg = yaml.safe_load(TINY.read_text())
    cfg["data"].update(source="npz", root=str(SHARED / "cifar10"), num_classes=10, image_size=32, train=256,
                       val=64, test=200, scene_source="coco", scene_root=str(SHARED / "detseg" / "tiny_coco"),
                       scene_size=64, scene_train=16, scene_val=12)  # fmt: skip
    cfg["evolution"]["generations"] = 1
    cfg["search"].update(spaces=["initial"], methods=["random"])
    cfg["transfer"]["methods"] = ["random"]
    (project / "params" / "default.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake(project, "results/default/report/summary.md")
    assert out.returncode == 0, out.stderr[-4000:]
    res = project / "results" / "default"
    with np.load(res / "data" / "cls_test.npz") as z:
        assert z["images"].shape == (200, 32, 32, 3) and z["labels"].max() <= 9
    with np.load(res / "data" / "scenes_val.npz") as z:
        assert len(z["class_names"]) == 80 and z["images"].shape == (12, 64, 64, 3)
    det = json.loads((res / "transfer" / "detection" / "initial" / "random" / "metrics.json").read_text())
    assert "per_class" in det and 0.0 <= det["map"] <= 100.0
    summary = (res / "report" / "summary.md").read_text()
    assert "| initial | random |" in summary


def test_autospace_space_runs_end_to_end(tmp_path: Path) -> None:
    """The `autospace` space through the real DAG: AutoSpace generations, a warmup on the learned
    space, a search, retrain, transfer and the report (one method, tiny sizes)."""
    project = make_project(tmp_path)
    cfg = yaml.safe_load(TINY.read_text())
    cfg["evolution"].update(methods=["autospace"], autospace={"epochs": 1, "population": 4, "n_mutants": 1})
    cfg["search"].update(spaces=["initial", "autospace"], methods=["random"])
    cfg["transfer"].update(methods=["random"], tasks=["segmentation"])
    (project / "params" / "default.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake(project)
    assert out.returncode == 0, out.stderr[-4000:]
    res = project / "results" / "default"
    state = json.loads((res / "space" / "autospace" / "gen2" / "space_state.json").read_text())
    assert all(p["reference"] in p["active"] for p in state["positions"])
    # Graph cells (mutants) reach the learned space, so warmup, search and retrain ran on them.
    assert any(op.startswith("g") for p in state["positions"] for op in p["active"])
    best = json.loads((res / "search" / "autospace" / "random" / "rep0" / "best.json").read_text())
    assert best["space"] == "autospace" and (res / "transfer" / "segmentation" / "autospace" / "random").is_dir()
    summary = (res / "report" / "summary.md").read_text()
    assert "| autospace | random |" in summary and "| initial | random |" in summary


def test_html_report_from_the_finished_study(study: Path, tmp_path: Path) -> None:
    """`snakemake --report` (what `nasstudy run` does after a successful run) finds every report()
    output and caption, summary.html included; written outside the study so that it stays as it was."""
    html = tmp_path / "report.html"
    out = snakemake(study, "--report", str(html))
    assert out.returncode == 0, out.stderr[-4000:]
    text = html.read_text()
    assert html.stat().st_size > 10_000 and "summary.html" in text and "correlation.png" in text
