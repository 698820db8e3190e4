"""Crash drill: SIGKILL a study at seeded points, rerun it each time, measure the work each kill cost.

Each kill point names a rule; the drill starts `nasstudy run`, waits until a job of that rule has
started in this attempt, waits a seeded random delay, then kills the whole process group (Snakemake
and every job) with SIGKILL — what a power cut or the OOM killer does. At the kill it reads the jobs'
events files (.checkpoints/<study>/<rule>/<job>.events: start, resume, save times) and records, per
job in flight, the seconds of work since its last checkpoint (lost) and its checkpoint interval so
far. After the last kill a final `nasstudy run` finishes the study.

    python benchmarks/crash_drill.py            # the default study in a fresh temp copy, 10 kills
    python benchmarks/crash_drill.py --kills 5  # fewer

It prints a table and writes benchmarks/results/crash_drill.json (and .md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NASSTUDY = Path(sys.executable).with_name("nasstudy")
# Where the kills land, in DAG order: (rule, event). "start": a seeded delay after a job of the rule
# started (often before its first checkpoint: the kill costs what it did so far); "save": a seeded
# delay after such a job wrote a checkpoint (the rerun must continue from it).
SCHEDULE = [
    ("evolve_space", "save"), ("evolve_space", "start"), ("warmup_supernet", "save"),
    ("warmup_supernet", "start"), ("search", "save"), ("search", "start"), ("search", "save"),
    ("retrain", "save"), ("transfer", "save"), ("transfer", "start"),
]  # fmt: skip


def read_events(project: Path, study: str) -> dict[str, list[dict]]:
    """Job name (rule/wildcards) -> its events, for every job that has an events file now."""
    out = {}
    for f in sorted((project / ".checkpoints" / study).glob("*/*.events")):
        try:
            lines = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
        except (OSError, ValueError):
            continue  # being written or removed right now
        out[f"{f.parent.name}/{f.stem}"] = lines
    return out


def in_flight(events: dict[str, list[dict]], since: float, at: float) -> list[dict]:
    """Jobs started in this attempt (a start at or after `since`): lost work and interval at time `at`."""
    jobs = []
    for name, evs in events.items():
        mine = [e for e in evs if e["t"] >= since]
        if not any(e["event"] == "start" for e in mine) or evs[-1]["event"] == "done":
            continue
        start = max(e["t"] for e in mine if e["event"] == "start")
        attempt = [e for e in mine if e["t"] >= start]
        marks = [start] + [e["t"] for e in attempt if e["event"] == "save"]
        gaps = np.diff(marks)
        saves = [e for e in attempt if e["event"] == "save"]
        jobs.append(
            {
                "job": name,
                "rule": name.split("/")[0],
                "resumed_from": next((e["label"] for e in attempt if e["event"] == "resume"), None),
                "checkpoints_this_attempt": len(saves),
                "last_checkpoint": saves[-1]["label"] if saves else None,
                "lost_s": round(at - marks[-1], 2),
                "interval_s": round(float(gaps.max()), 2) if len(gaps) else None,
            }
        )
    return jobs


def triggered(events: dict[str, list[dict]], since: float, rule: str, kind: str) -> bool:
    """A job of `rule` has a `kind` event ("start" or "save") at or after `since`."""
    return any(
        name.split("/")[0] == rule and any(e["event"] == kind and e["t"] >= since for e in evs)
        for name, evs in events.items()
    )


def attempt(project: Path, study: str, point: tuple[str, str] | None, delay: float, log: Path, timeout: float) -> dict:
    """One `nasstudy run`: killed `delay` s after a job of the point's rule had the point's event
    (start or save), or run to the end (point None). Notes every job that resumed from a checkpoint."""
    rule, kind = point or (None, None)
    t0, resumed, fire_at = time.time(), {}, None
    with open(log, "a") as f:
        proc = subprocess.Popen(
            [str(NASSTUDY), "run", "--cores", "2"], cwd=project, stdout=f, stderr=f, start_new_session=True
        )
    try:
        while proc.poll() is None:
            events = read_events(project, study)
            for name, evs in events.items():
                for e in evs:
                    if e["event"] == "resume" and e["t"] >= t0:
                        resumed[name] = e["label"]
            if rule is not None and fire_at is None and triggered(events, t0, rule, kind):
                fire_at = time.time() + delay
            if fire_at is not None and time.time() >= fire_at:
                jobs = in_flight(events, t0, time.time())
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return {"rule": rule, "event": kind, "delay_s": round(delay, 2), "killed": True,
                        "after_s": round(time.time() - t0, 2), "jobs": jobs, "resumed": resumed}  # fmt: skip
            if time.time() - t0 > timeout:
                raise TimeoutError(f"{point} not reached within {timeout:.0f}s")
            time.sleep(0.05)
        return {"rule": rule, "event": kind, "killed": False, "rc": proc.returncode,
                "after_s": round(time.time() - t0, 2), "resumed": resumed}  # fmt: skip
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def drill(project: Path, study: str, kills: int, seed: int, timeout: float = 1800.0) -> dict:
    """Kill the study in `project` at `kills` points of SCHEDULE (seeded delays), then finish it."""
    rng = np.random.default_rng(seed)
    schedule = SCHEDULE[:kills] if kills <= len(SCHEDULE) else SCHEDULE + [("search", "save")] * (kills - len(SCHEDULE))
    log = project / "crash_drill.log"
    records, start = [], time.time()
    for point in schedule:
        delay = float(rng.uniform(0.1, 1.5) if point[1] == "save" else rng.uniform(0.2, 3.0))
        records.append(attempt(project, study, point, delay, log, timeout))
    final = attempt(project, study, None, 0.0, log, timeout)
    return {"kills": records, "final": final, "wall_s": round(time.time() - start, 1)}


def summary_rows(result: dict) -> list[dict]:
    rows = []
    for i, k in enumerate(result["kills"], start=1):
        for j in k.get("jobs") or [{}]:
            rows.append({"kill": i, "waited_for": f"{k['rule']} {k['event']}", "after_s": k["after_s"], **j})
    return rows


def markdown(result: dict) -> str:
    lines = [
        "| kill | waited for | killed after (s) | job in flight | resumed from | last checkpoint | lost (s) "
        "| interval (s) |",
        "|---:|---|---:|---|---|---|---:|---:|",
    ]
    for r in summary_rows(result):
        interval = "—" if r.get("interval_s") is None else r["interval_s"]
        lines.append(
            f"| {r['kill']} | {r['waited_for']} | {r['after_s']} | {r.get('job', '—')} "
            f"| {r.get('resumed_from') or '—'} "
            f"| {r.get('last_checkpoint') or 'none yet'} | {r.get('lost_s', '—')} | {interval} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=10, help="kill points (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill delays (default 0)")
    parser.add_argument("--keep", action="store_true", help="keep the temp project")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="nasstudy-drill-"))
    project = tmp / "project"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(project)], check=True)
    try:
        result = drill(project, "default", args.kills, args.seed)
        status = subprocess.run([str(NASSTUDY.with_name("dvc")), "status", "--json"], cwd=project, capture_output=True)
        result["dvc_status_clean"] = status.returncode == 0 and json.loads(status.stdout or b"{}") == {}
        result["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                          text=True).stdout.strip()  # fmt: skip
        out = ROOT / "benchmarks" / "results"
        out.mkdir(parents=True, exist_ok=True)
        (out / "crash_drill.json").write_text(json.dumps(result, indent=2) + "\n")
        (out / "crash_drill.md").write_text(markdown(result))
        print(markdown(result))
        final, clean = result["final"], result["dvc_status_clean"]
        print(f"final run rc {final.get('rc')}, wall {result['wall_s']} s, dvc status clean: {clean}")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
