"""dvc.yaml's top-level `params` and `metrics`: the real `dvc` shows the report's summary.json and the
params that changed since the last commit (the report stage writes summary.json; here the test does)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from helpers.e2e import BIN, ROOT

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]


def run(cwd: Path, *cmd: str | Path) -> str:
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_dvc_metrics_show_and_params_diff(tmp_path: Path) -> None:
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "params").mkdir()
    shutil.copy(ROOT / "params" / "default.yaml", tmp_path / "params" / "default.yaml")
    summary = tmp_path / "results" / "default" / "report" / "summary.json"
    summary.parent.mkdir(parents=True)
    summary.write_text(json.dumps({"initial.random.test_acc_mean": 38.5, "nse.rea.test_acc_ci_low": 36.25}))
    run(tmp_path, "git", "init", "-q")
    run(tmp_path, BIN / "dvc", "init", "-q")
    run(tmp_path, *GIT, "add", "dvc.yaml", "params", ".dvc")
    run(tmp_path, *GIT, "commit", "-qm", "study")

    shown = json.loads(run(tmp_path, BIN / "dvc", "metrics", "show", "--json"))
    (workspace,) = shown.values()  # one revision, the workspace (its key differs between DVC versions)
    metrics = workspace["data"]["results/default/report/summary.json"]["data"]
    assert metrics == {"initial.random.test_acc_mean": 38.5, "nse.rea.test_acc_ci_low": 36.25}

    params = tmp_path / "params" / "default.yaml"
    text = params.read_text()
    (old,) = re.findall(r"^  budget: (\d+) ", text, flags=re.M)  # the search budget, whatever the default
    params.write_text(text.replace(f"  budget: {old} ", f"  budget: {int(old) + 36} "))
    diff = json.loads(run(tmp_path, BIN / "dvc", "params", "diff", "--json"))
    expected = {"old": int(old), "new": int(old) + 36, "diff": 36}
    assert diff == {"params/default.yaml": {"search.budget": expected}}
    everything = json.loads(run(tmp_path, BIN / "dvc", "params", "diff", "--all", "--json"))["params/default.yaml"]
    assert everything["seed"]["new"] == 0 and everything["tracking.flush_seconds"]["new"] == 10
