"""benchmarks/bench_study.py's per-rule CPU breakdown, read from the jobs' `done in` log lines."""

from __future__ import annotations

import sys
from pathlib import Path

from helpers.e2e import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_study  # noqa: E402


def test_cpu_by_rule_sums_the_done_lines_of_every_job_log(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    (logs / "search" / "initial").mkdir(parents=True)
    (logs / "search" / "initial" / "rea.log").write_text(
        "[nasstudy] search {'space': 'initial', 'method': 'rea'} starting (forked from 12)\n"
        "search initial/rea: 100%|####| 30/30\n"
        "[nasstudy] search {'space': 'initial', 'method': 'rea'} done in 12.5s, process cpu 6.25s\n"
    )
    (logs / "search" / "initial" / "random.log").write_text(
        "[nasstudy] search {'space': 'initial', 'method': 'random'} done in 7.5s, process cpu 3.75s\n"
    )
    (logs / "init_space.log").write_text("[nasstudy] init_space {} done in 0.1s, process cpu 0.11s\n")
    (logs / "failed.log").write_text("[nasstudy] ERROR retrain[space=x]: RuntimeError: boom\n")
    rules = bench_study.cpu_by_rule(logs)
    assert list(rules) == ["search", "init_space"]  # most CPU first
    assert rules["search"] == {"jobs": 2, "cpu_seconds": 10.0, "wall_seconds": 20.0, "cpu_seconds_per_job": 5.0}
    assert rules["init_space"]["cpu_seconds"] == 0.1 and rules["init_space"]["jobs"] == 1


def test_children_cpu_counts_a_finished_child() -> None:
    import subprocess

    before = bench_study.children_cpu()
    subprocess.run([sys.executable, "-c", "sum(i * i for i in range(3_000_000))"], check=True)
    assert bench_study.children_cpu() - before > 0.05


def test_a_jobs_cpu_seconds_grow_with_its_work() -> None:
    from nasstudy.runner import cpu_seconds

    before = cpu_seconds()
    sum(i * i for i in range(3_000_000))
    assert cpu_seconds() - before > 0.05
