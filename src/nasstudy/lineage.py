"""`nasstudy lineage PATH`: where a file came from, and whether it is still what was recorded.

Every Snakemake job leaves an MLflow run tagged with its rule, wildcards, code version, params and
the md5 of every input and output (nasstudy.mlflow_tracking). Walking from the newest finished run
that wrote PATH to the runs that wrote its inputs, back to the data, gives the file's whole
history; hashing the files on disk against those records shows what was changed since (by hand, a
partial copy, a bad `dvc pull`). DVC's view (the phase stage in dvc.yaml and dvc.lock's hash) is
shown beside it, since that is what `dvc push`/`pull` share.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from nasstudy.config import ParamsError, load_params
from nasstudy.project import default_params, dvc_executable
from nasstudy.utils import file_md5

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

OK, CHANGED, MISSING = "ok", "CHANGED", "MISSING"
NOT_RECORDED = "no MLflow job run recorded {path} as an output; run the study first / is it the right --params?"


class LineageError(RuntimeError):
    """PATH has no recorded producer, or the store cannot be read; one line meant for a person."""


def normalise(path: str | Path, workdir: Path) -> str:
    """A path relative to the project folder, as Snakemake records it (`results/...`)."""
    p = str(path)
    if os.path.isabs(p):
        for base in (str(workdir), str(workdir.resolve())):
            for cand in (p, os.path.realpath(p)):
                if os.path.commonpath([cand, base]) == base:
                    return Path(os.path.relpath(cand, base)).as_posix()
        return Path(os.path.normpath(p)).as_posix()
    return Path(os.path.normpath(p)).as_posix()


def file_records(tags: dict[str, str], kind: str, workdir: Path) -> list[dict[str, Any]]:
    """The `input.*` or `output.*` tags of a run as [{name, path, md5}] (md5 None: it was missing then)."""
    out = []
    for key in sorted(tags):
        if key.startswith(kind + "."):
            path, _, md5 = tags[key].rpartition(" ")
            md5 = None if md5 in ("", "missing") else md5
            out.append({"name": key[len(kind) + 1 :], "path": normalise(path, workdir), "md5": md5})
    return out


def job_runs(client: MlflowClient, exp_id: str) -> list[Run]:
    """Every finished job run of the experiment (all studies), newest first."""
    from nasstudy.mlflow_tracking import ROLE_TAG, retry

    runs, token = [], None
    query = f"tags.`{ROLE_TAG}` = 'job' and attributes.status = 'FINISHED'"
    while True:
        page = retry(lambda t=token: client.search_runs([exp_id], filter_string=query, max_results=1000, page_token=t))
        runs.extend(page)
        token = page.token
        if not token:
            break
    return sorted(runs, key=lambda r: r.info.end_time or 0, reverse=True)


def pick_producer(candidates: list[tuple[Run, str | None]], md5: str | None, before_ms: int | None) -> tuple | None:
    """The run that wrote the file a consumer read: same md5, ended before it started, newest first."""

    def score(c: tuple) -> tuple:
        run, rec_md5 = c
        end = run.info.end_time or 0
        return (md5 is not None and rec_md5 == md5, before_ms is None or end <= before_ms, end)

    return max(candidates, key=score) if candidates else None


def iso(ms: int | None) -> str | None:
    return datetime.fromtimestamp(ms / 1000).astimezone().isoformat(timespec="seconds") if ms else None


class Checker:
    """Hashes each file on disk once and compares it with what a run recorded."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.md5s: dict[str, str | None] = {}

    def disk_md5(self, path: str) -> str | None:
        if path not in self.md5s:
            f = self.workdir / path
            self.md5s[path] = file_md5(f) if f.is_file() else None
        return self.md5s[path]

    def check(self, rec: dict[str, Any]) -> dict[str, Any]:
        disk = self.disk_md5(rec["path"])
        status = MISSING if disk is None else OK if disk == rec["md5"] else CHANGED
        return {**rec, "disk_md5": disk, "status": status}


def walk(client: MlflowClient, exp_id: str, path: str, workdir: Path) -> list[dict[str, Any]]:
    """The nodes that produced `path`, its producer first, each run once (a DAG, not a tree)."""
    index: dict[str, list[tuple]] = {}
    for run in job_runs(client, exp_id):
        for rec in file_records(run.data.tags, "output", workdir):
            index.setdefault(rec["path"], []).append((run, rec["md5"]))
    root = pick_producer(index.get(path, []), None, None)
    if root is None:
        raise LineageError(NOT_RECORDED.format(path=path))
    checker, nodes, seen = Checker(workdir), [], set()
    todo = [root[0]]
    while todo:
        run = todo.pop(0)
        if run.info.run_id in seen:
            continue
        seen.add(run.info.run_id)
        node = make_node(run, workdir, checker)
        for rec in node["inputs"]:
            found = pick_producer(index.get(rec["path"], []), rec["md5"], run.info.start_time)
            rec["producer"] = found[0].info.run_id if found else None
            if found and found[1] != rec["md5"]:  # the producer wrote something else than this job read
                rec["producer_md5"] = found[1]
                rec["status"] = CHANGED if rec["status"] == OK else rec["status"]
            if found:
                todo.append(found[0])
        nodes.append(node)
    return nodes


def make_node(run: Run, workdir: Path, checker: Checker) -> dict[str, Any]:
    tags, info = run.data.tags, run.info
    return {
        "run_id": info.run_id,
        "name": info.run_name,
        "rule": tags.get("nasstudy.rule"),
        "wildcards": json.loads(tags.get("nasstudy.wildcards") or "{}"),
        "study": tags.get("nasstudy.study"),
        "status": info.status,
        "start_time": iso(info.start_time),
        "end_time": iso(info.end_time),
        "seconds": round((info.end_time - info.start_time) / 1000, 1) if info.end_time else None,
        "git_commit": tags.get("git.commit"),
        "git_dirty": tags.get("git.dirty"),
        "params_hash": tags.get("nasstudy.params_hash"),
        "params": dict(sorted(run.data.params.items())),
        "outputs": [checker.check(r) for r in file_records(tags, "output", workdir)],
        "inputs": [checker.check(r) for r in file_records(tags, "input", workdir)],
    }


def dvc_stage_outs(workdir: Path) -> dict[str, str]:
    """dvc.yaml's outs (phase folders) -> the stage that holds them."""
    f = workdir / "dvc.yaml"
    stages = (yaml.safe_load(f.read_text()) or {}).get("stages", {}) if f.is_file() else {}
    outs = {}
    for name, stage in stages.items():
        for o in stage.get("outs", []) if isinstance(stage, dict) else []:
            outs[Path(next(iter(o)) if isinstance(o, dict) else o).as_posix().rstrip("/")] = name
    return outs


def dvc_manifest(workdir: Path, md5: str) -> dict[str, str]:
    """relpath -> md5 of a folder recorded in dvc.lock, from its `.dir` object in the local cache."""
    for cache in (workdir / ".dvc" / "cache" / "files" / "md5", workdir / ".dvc" / "cache"):
        f = cache / md5[:2] / md5[2:]
        if f.is_file():
            return {e["relpath"]: e["md5"] for e in json.loads(f.read_text())}
    return {}


def dvc_status(workdir: Path, stages: list[str]) -> dict[str, Any] | str:
    """`dvc status --json STAGES` (what changed since dvc.lock), or why it could not be read."""
    res = subprocess.run([dvc_executable(), "status", "--json", *stages], cwd=workdir, capture_output=True, text=True)
    try:
        return json.loads(res.stdout) if res.returncode == 0 else (res.stderr.strip().splitlines() or ["?"])[-1]
    except json.JSONDecodeError:
        return res.stdout.strip()[-200:]


def dvc_records(nodes: list[dict[str, Any]], workdir: Path) -> dict[str, dict[str, Any]]:
    """For each dvc.yaml phase the chain's files fall in: its folder, dvc.lock's md5 and whether it matches.
    Also sets `dvc_stage` and `dvc_md5` (the file's md5 in dvc.lock's manifest) on every file record."""
    outs = dvc_stage_outs(workdir)
    if not outs or not (workdir / ".dvc").is_dir():
        return {}
    lock_file = workdir / "dvc.lock"
    lock = (yaml.safe_load(lock_file.read_text()) or {}).get("stages", {}) if lock_file.is_file() else {}
    phases: dict[str, dict[str, Any]] = {}
    for rec in (r for n in nodes for r in (*n["outputs"], *n["inputs"])):
        out = next((o for o in outs if rec["path"] == o or rec["path"].startswith(o + "/")), None)
        if out is None:
            continue
        stage = outs[out]
        if stage not in phases:
            locked = next((o for o in lock.get(stage, {}).get("outs", []) if o.get("path") == out), None)
            md5 = locked.get("md5") if locked else None
            manifest = dvc_manifest(workdir, md5) if md5 else {}
            phases[stage] = {"out": out, "lock_md5": md5, "manifest": manifest, "state": "not in dvc.lock"}
        rel = os.path.relpath(rec["path"], out)
        rec["dvc_stage"], rec["dvc_md5"] = stage, phases[stage]["manifest"].get(rel)
    locked_stages = [s for s, p in phases.items() if p["lock_md5"]]
    status = dvc_status(workdir, locked_stages) if locked_stages else {}
    for stage in locked_stages:
        p = phases[stage]
        if isinstance(status, str):
            p["state"] = f"dvc status failed: {status}"
            continue
        changes = [c for c in status.get(stage, []) if isinstance(c, dict)]
        outs_changed = {k: v for c in changes for k, v in c.get("changed outs", {}).items()}
        deps_changed = sorted({k for c in changes for k in c.get("changed deps", {})})
        if p["out"] in outs_changed:
            p["state"] = f"CHANGED since dvc.lock ({outs_changed[p['out']]})"
        else:
            p["state"] = "matches dvc.lock" + (
                f" (deps changed since: {', '.join(deps_changed)})" if deps_changed else ""
            )
    for p in phases.values():
        del p["manifest"]
    for n in nodes:
        n["dvc"] = {s: phases[s] for s in sorted({r["dvc_stage"] for r in n["outputs"] if r.get("dvc_stage")})}
    return phases


def lineage(path: str | Path, config: dict, workdir: Path | None = None) -> dict[str, Any]:
    """The chain of MLflow job runs behind `path`, every file checked, and DVC's record of its phases."""
    from nasstudy import mlflow_tracking as mt

    workdir = Path(workdir or os.getcwd())
    rel = normalise(path, workdir)
    try:
        uri = mt.check_tracking_server(config, workdir)
    except mt.TrackingUnavailable as e:
        raise LineageError(str(e)) from None
    from mlflow.tracking import MlflowClient

    name = config["tracking"]["experiment"]
    try:  # a corrupt or locked mlflow.db: one line, not SQLAlchemy's traceback
        client = mt.retry(lambda: MlflowClient(tracking_uri=uri))
        exp = mt.retry(lambda: client.get_experiment_by_name(name))
        if exp is None:
            raise LineageError(f"no MLflow experiment '{name}' at {uri}; " + NOT_RECORDED.format(path=rel))
        nodes = walk(client, exp.experiment_id, rel, workdir)
    except mt.store_errors() as e:
        raise LineageError(f"tracking error: {mt.tracking_failure(uri, e)}") from None
    dvc = dvc_records(nodes, workdir)
    flagged = sorted({r["path"] for n in nodes for r in (*n["outputs"], *n["inputs"]) if r["status"] != OK})
    return {"path": rel, "tracking_uri": uri, "experiment": name, "nodes": nodes, "dvc": dvc, "flagged": flagged}


def short(md5: str | None) -> str:
    return (md5 or "-")[:12]


def render_file(rec: dict[str, Any], names: dict[str, str]) -> str:
    line = f"{rec['status']:<8} {rec['path']}  md5 {short(rec['md5'])}"
    if rec["status"] == CHANGED and rec.get("disk_md5") != rec["md5"]:
        line += f", on disk now {short(rec['disk_md5'])}"
    if rec.get("producer_md5"):
        line += f", but its producer wrote {short(rec['producer_md5'])}"
    if rec.get("dvc_md5") and rec["dvc_md5"] != rec["md5"]:
        line += f"  (dvc.lock holds {short(rec['dvc_md5'])})"
    if "producer" in rec:
        line += f"  <- {names[rec['producer']]}" if rec["producer"] else "  (data: no producer)"
    return line


def render(result: dict[str, Any]) -> str:
    """An indented tree: each run's block, then the runs that made its inputs, one level deeper."""
    nodes = {n["run_id"]: n for n in result["nodes"]}
    names = {rid: n["name"] for rid, n in nodes.items()}
    lines = [f"lineage of {result['path']}  (MLflow {result['tracking_uri']}, experiment {result['experiment']})", ""]
    shown: set[str] = set()

    def block(rid: str, depth: int) -> None:
        n, pad = nodes[rid], "    " * depth
        head = f"{pad}{'└─ ' if depth else ''}{n['name']}  (run {rid})"
        if rid in shown:
            lines.append(head + "  shown above")
            return
        shown.add(rid)
        pad += "   " if depth else ""
        dirty = {"true": "dirty tree", "false": "clean"}.get(n["git_dirty"], f"dirty: {n['git_dirty']}")
        params = "  ".join(f"{k}={v}" for k, v in n["params"].items()) or "-"
        lines.append(head)
        lines.append(f"{pad}   ran     {n['start_time']} -> {n['end_time']} ({n['seconds']} s), study {n['study']}")
        lines.append(f"{pad}   code    git {(n['git_commit'] or '?')[:12]} ({dirty}), params hash {n['params_hash']}")
        width = max(60, 110 - len(pad))
        for i, chunk in enumerate(textwrap.wrap(params, width, break_on_hyphens=False, break_long_words=False)):
            lines.append(f"{pad}   {'params' if i == 0 else '':<8}{chunk}")
        for kind in ("outputs", "inputs"):
            for i, rec in enumerate(n[kind]):
                lines.append(f"{pad}   {kind[:-1] if i == 0 else '':<8}{render_file(rec, names)}")
        for stage, p in n.get("dvc", {}).items():
            locked = f", dvc.lock md5 {p['lock_md5']}" if p["lock_md5"] else ""
            lines.append(f"{pad}   dvc     stage {stage} ({p['out']}{locked}): {p['state']}")
        for producer in dict.fromkeys(r["producer"] for r in n["inputs"] if r.get("producer")):
            block(producer, depth + 1)

    block(result["nodes"][0]["run_id"], 0)
    count = len({r["path"] for n in result["nodes"] for r in (*n["outputs"], *n["inputs"])})
    lines.append("")
    if result["flagged"]:
        lines.append(f"FLAGGED {len(result['flagged'])} of {count} files (changed or missing since recorded):")
        lines += [f"  {p}" for p in result["flagged"]]
    else:
        lines.append(f"verified: all {count} files in the chain ({len(nodes)} runs) match their recorded md5")
    return "\n".join(lines)


def cmd_lineage(args: argparse.Namespace) -> int:
    """Exit 0: every file verified; 1: some changed or missing; 2: PATH not recorded / bad params."""
    try:
        result = lineage(args.path, load_params(Path(args.params) if args.params else None, default_params()))
    except (LineageError, ParamsError) as e:
        print(f"lineage error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result["nodes"], indent=1))
    else:
        print(render(result))
    return 1 if result["flagged"] else 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `nasstudy lineage` (called by nasstudy.cli.build_parser)."""
    p = subparsers.add_parser(
        "lineage",
        help="the chain of jobs that produced a file, with every hash verified",
        description="Trace PATH back to the data through the MLflow job runs that produced it: for each job "
        "its rule, wildcards, times, git commit, params, inputs and outputs with their md5, and the DVC phase "
        "that holds them. Every file is hashed again: CHANGED / MISSING mark files that differ from the record. "
        "Exit code 0: all verified; 1: something flagged; 2: PATH was not produced by any recorded job.",
    )
    p.add_argument("path", metavar="PATH", help="a file under results/ (relative to the project folder)")
    p.add_argument("--json", action="store_true", help="print the nodes as JSON (the first one produced PATH)")
    p.add_argument("--params", metavar="FILE", help="params file naming the tracking URI and experiment")
    p.set_defaults(func=cmd_lineage)
