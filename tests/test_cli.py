"""The nasstudy command: help texts and what it hands to Snakemake."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nasstudy import cli
from nasstudy.config import PROJECT_ROOT


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["status", "--help"]])
def test_help_explains(args: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(args)
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: nasstudy" in out
    if args[0] == "run":
        assert "--params" in out and "--until" in out and "examples:" in out


def test_snakemake_command_overlays_only_a_non_default_params_file(tmp_path: Path) -> None:
    default = cli.snakemake_command(PROJECT_ROOT / "params" / "default.yaml", "2", [])
    assert "--configfile" not in default and default[-2:] == ["--cores", "2"]
    other = cli.snakemake_command(tmp_path / "x.yaml", "all", ["--dry-run"])
    assert other[-3:] == ["--configfile", str(tmp_path / "x.yaml"), "--dry-run"]


def test_dry_run_lists_the_whole_study_and_writes_nothing(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "nasstudy.cli", "run", "--dry-run", "--cores", "1"],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    text = out.stdout + out.stderr
    for rule in ("prepare_data", "evolve_space", "warmup_supernet", "search", "retrain", "transfer", "report"):
        assert f"rule {rule}:" in text
    assert not (tmp_path / "results").exists()


def test_status_reports_pending_jobs(tmp_path: Path) -> None:
    html = tmp_path / "results" / "default" / "report.html"  # a leftover HTML report: status points to it
    html.parent.mkdir(parents=True)
    html.write_text("<html></html>")
    out = subprocess.run([sys.executable, "-m", "nasstudy.cli", "status"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "study:   default" in out.stdout
    # 3 spaces x 5 methods x 3 replicates, and 4 ranking archs per space: 127 jobs in all
    assert "jobs:    127 pending:" in out.stdout and "search 45" in out.stdout and "ranking 12" in out.stdout
    assert "report:  (not yet made)" in out.stdout
    assert "html:    results/default/report.html (out of date" in out.stdout
