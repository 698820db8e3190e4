"""dvc.yaml's stage deps cover the code of the rules each phase runs: the same import closure that
Snakemake's code hashes use (nasstudy.pipeline.import_closure), so `dvc status` sees every edit
that reruns a job."""

from __future__ import annotations

import shlex

import yaml

from nasstudy import pipeline
from nasstudy.config import PROJECT_ROOT


def phase_rules(name: str, stage: dict) -> list[str]:
    """The rules a phase runs: its cmd's `--until` targets, else (the last phase) the stage's name."""
    args = shlex.split(stage["cmd"])
    if "--until" not in args:
        return [name]
    return [a for a in args[args.index("--until") + 1 :] if not a.startswith("-")]


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def test_dvc_deps_cover_each_phases_code() -> None:
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    missing = []
    for name, stage in stages.items():
        for rule in phase_rules(name, stage):
            for f in pipeline.import_closure(f"nasstudy.stages.{rule}"):
                rel = str(f.relative_to(PROJECT_ROOT))
                if not covered(rel, stage["deps"]):
                    missing.append(f"{name}: {rel} (rule {rule})")
    assert missing == [], "dvc.yaml deps lack:\n" + "\n".join(missing)


def test_phase_rules_read_the_until_targets() -> None:
    assert phase_rules("ranking", {"cmd": "nasstudy run --no-dvc --until ranking_sample ranking"}) == [
        "ranking_sample",
        "ranking",
    ]
    assert phase_rules("report", {"cmd": "nasstudy run --no-dvc"}) == ["report"]
