"""Is every artifact of the study still what its job wrote?

Snakemake decides what to run from file names and times only: a file edited by hand (or damaged,
or half-copied) looks finished, and its wrong numbers flow into the report and into dvc.lock.
Every job records the md5 of each output in its MLflow run (nasstudy.mlflow_tracking.file_tags),
and dvc.lock records the md5 of each file of a committed phase. A file that matches neither is
*altered*: `nasstudy run` has Snakemake recompute it (`--forcerun FILE`, which also reruns what
depends on it), `nasstudy status` names it, and dvc.lock never records its phase.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from nasstudy import lineage
from nasstudy.utils import file_md5


@dataclass(frozen=True)
class Altered:
    path: str
    job: str  # the MLflow run name of the job that wrote it: `retrain[space=initial,method=rea,rep=0]`
    recorded: str
    disk: str

    def __str__(self) -> str:
        return f"{self.path} is not what {self.job} wrote (md5 {self.recorded[:12]} recorded, {self.disk[:12]} now)"


@dataclass
class Record:
    md5: str  # what the newest finished job run that wrote the file recorded
    job: str
    params_hash: str | None
    accepted: set[str]  # md5s recorded by runs of that job with the same params (another clone on a shared store)


def recorded_outputs(config: dict, workdir: Path) -> dict[str, Record]:
    """What the finished job runs recorded for every output under results/<study>/. Empty where no
    store or experiment exists yet (a fresh study or clone). Raises
    mlflow_tracking.TrackingUnavailable or a store error where the store cannot be read."""
    from nasstudy import mlflow_tracking as mt

    uri = mt.check_tracking_server(config, workdir)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return {}
    from mlflow.tracking import MlflowClient

    client = mt.retry(lambda: MlflowClient(tracking_uri=uri))
    exp = mt.retry(lambda: client.get_experiment_by_name(config["tracking"]["experiment"]))
    if exp is None:
        return {}
    prefix, out = f"results/{config['study']}/", {}
    for run in lineage.job_runs(client, exp.experiment_id):  # newest first
        params_hash = run.data.tags.get("nasstudy.params_hash")
        for rec in lineage.file_records(run.data.tags, "output", workdir):
            if rec["path"].startswith(prefix) and rec["md5"]:
                r = out.setdefault(rec["path"], Record(rec["md5"], run.info.run_name, params_hash, set()))
                if r.params_hash == params_hash:
                    r.accepted.add(rec["md5"])
    return out


def dvc_recorded(workdir: Path) -> dict[str, str]:
    """path -> md5 of every file of the phases dvc.lock records (from their manifests in the DVC cache)."""
    lock_file = workdir / "dvc.lock"
    if not lock_file.is_file():
        return {}
    stages = (yaml.safe_load(lock_file.read_text()) or {}).get("stages", {})
    out = {}
    for stage in stages.values():
        for o in stage.get("outs", []):
            if str(o.get("md5", "")).endswith(".dir"):
                manifest = lineage.dvc_manifest(workdir, o["md5"])
                out.update({f"{o['path'].rstrip('/')}/{rel}": md5 for rel, md5 in manifest.items()})
    return out


def altered_files(config: dict, workdir: Path | None = None) -> list[Altered]:
    """Files of the study on disk whose md5 is neither what their newest job recorded (or a run of it
    with the same params did) nor what dvc.lock holds (a pulled file matches dvc.lock). Files no
    job recorded are not judged."""
    workdir = Path(workdir or os.getcwd())
    return compare(recorded_outputs(config, workdir), workdir)


def compare(records: dict[str, Record], workdir: Path) -> list[Altered]:
    dvc = dvc_recorded(workdir) if records else {}
    altered = []
    for path, r in sorted(records.items()):
        f = workdir / path
        if f.is_file() and (disk := file_md5(f)) not in r.accepted and disk != dvc.get(path):
            altered.append(Altered(path, r.job, r.md5, disk))
    return altered


def study_files(summary_cmd: list[str]) -> set[str]:
    """Every output file of the study's DAG, from `snakemake --summary` (first column)."""
    out = subprocess.run(summary_cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return set()
    return {line.split("\t", 1)[0] for line in out.stdout.splitlines()[1:] if "\t" in line}


def check(
    config: dict, summary_cmd: list[str], workdir: Path | None = None
) -> tuple[list[Altered], dict[str, Record], str | None]:
    """The altered files that belong to the study's DAG (a file of a job no longer in it is left
    alone), every recorded output, and why the md5s could not be checked (None when they were)."""
    from nasstudy import mlflow_tracking as mt

    workdir = Path(workdir or os.getcwd())
    try:
        records = recorded_outputs(config, workdir)
    except (mt.TrackingUnavailable, *mt.store_errors()) as e:
        return [], {}, mt.tracking_failure(mt.tracking_uri(config, workdir), e)
    altered = compare(records, workdir)
    if altered:
        in_dag = study_files(summary_cmd)
        altered = [a for a in altered if a.path in in_dag]
    return altered, records, None


def recompute_args(config: dict, summary_cmd: list[str]) -> list[str]:
    """`--forcerun FILE...` for the altered files of the study (one line each on stderr), or []:
    Snakemake reruns their jobs and everything downstream. A store that cannot be read is left to
    the run's start, which stops with one line."""
    altered = check(config, summary_cmd)[0]
    for a in altered:
        print(f"nasstudy: {a}; recomputing it and what depends on it", file=sys.stderr)
    return ["--forcerun", *(a.path for a in altered)] if altered else []
