"""Wall time of the README's study command on a fresh clone: set-up, first run, no-op rerun.

    python benchmarks/bench_study.py                 # fresh clone + fresh venv (the honest figure)
    python benchmarks/bench_study.py --keep DIR      # keep the clone in DIR for inspection
    python benchmarks/bench_study.py --venv .venv    # reuse a venv: no set-up figure (its src: the clone's)

Prints a table and writes benchmarks/results/study.json. Also records what the issue asks to
see from the default study: the random-arch accuracy spread and Kendall's tau from the report,
`snakemake -n` and `dvc status` after the run, and where the CPU time went: the study's CPU
seconds (user + system of every process it ran, a figure other work on the machine does not
inflate the way it does wall time) and, per rule, the CPU seconds its jobs' processes used (each
job's log ends with them; a job forked from the fork server counts from its fork). The rest of
the study's CPU is Snakemake itself, the job scripts' start-up, the fork server's imports and DVC.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DONE = re.compile(r"^\[nasstudy\] (\w+) (\{.*\}) done in ([\d.]+)s, process cpu ([\d.]+)s")


def children_cpu() -> float:
    """User + system CPU seconds of every finished child process (and theirs, when waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_by_rule(logs: Path) -> dict[str, dict[str, float]]:
    """Per rule: jobs, their CPU and wall seconds (sum), from the `done in` line of every job log."""
    rules: dict[str, dict[str, float]] = {}
    for log in sorted(logs.rglob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if m := DONE.match(line):
                row = rules.setdefault(m.group(1), {"jobs": 0, "cpu_seconds": 0.0, "wall_seconds": 0.0})
                row["jobs"] += 1
                row["wall_seconds"] += float(m.group(3))
                row["cpu_seconds"] += float(m.group(4))
    for row in rules.values():
        row["cpu_seconds"] = round(row["cpu_seconds"], 1)
        row["wall_seconds"] = round(row["wall_seconds"], 1)
        row["cpu_seconds_per_job"] = round(row["cpu_seconds"] / row["jobs"], 2)
    return dict(sorted(rules.items(), key=lambda kv: -kv[1]["cpu_seconds"]))


def timed(cmd: list[str], cwd: Path, env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    return time.perf_counter() - start, out


def check(out: subprocess.CompletedProcess, what: str) -> None:
    if out.returncode != 0:
        raise SystemExit(f"{what} failed ({out.returncode}):\n{out.stderr[-3000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", type=Path, help="clone into this folder and keep it")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "study.json")
    ap.add_argument("--venv", type=Path, help="reuse this venv instead of a fresh set-up (not the honest figure)")
    args = ap.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="nasstudy-bench-"))
    clone = base / "nasstudy"
    if clone.exists():
        shutil.rmtree(clone)
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env_note = {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()}

    env = None
    if args.venv:  # its nasstudy may be installed from elsewhere: the clone's src comes first
        (clone / ".venv").symlink_to(args.venv.resolve())
        env = {**os.environ, "PYTHONPATH": str(clone / "src")}
    t_setup, out = timed(["bash", "scripts/setup.sh"], clone, env)
    check(out, "setup")
    cpu_before = children_cpu()
    t_study, out = timed(["bash", "scripts/study.sh"], clone, env)
    study_cpu = children_cpu() - cpu_before
    check(out, "study")
    rules = cpu_by_rule(clone / "logs" / "default")
    jobs_cpu = sum(r["cpu_seconds"] for r in rules.values())
    t_rerun, out = timed(["bash", "scripts/study.sh"], clone, env)
    check(out, "rerun")
    _, dry = timed([str(clone / ".venv/bin/snakemake"), "-n"], clone, env)
    _, dvc = timed([str(clone / ".venv/bin/dvc"), "status", "--json"], clone, env)
    report = json.loads((clone / "results/default/report/report.json").read_text())
    result = {
        "setup_seconds": None if args.venv else round(t_setup, 1),
        "study_seconds": round(t_study, 1),
        "study_with_setup_seconds": round(t_setup + t_study, 1),
        "noop_rerun_seconds": round(t_rerun, 1),
        "study_cpu_seconds": round(study_cpu, 1),
        "jobs_cpu_seconds": round(jobs_cpu, 1),
        "other_cpu_seconds": round(study_cpu - jobs_cpu, 1),
        "cpu_by_rule": rules,
        "dry_run_nothing_to_do": "Nothing to be done" in (dry.stdout + dry.stderr),
        "dvc_status_clean": dvc.returncode == 0 and json.loads(dvc.stdout or "{}") == {},
        "random_arch_spread": report.get("random_archs"),
        "kendall_tau": report.get("kendall_tau"),
        "summary_md": (clone / "results/default/report/summary.md").read_text(),
        "git_commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout,
        "env": env_note,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"set-up (fresh venv)      {t_setup:7.1f} s")
    print(f"study, first run         {t_study:7.1f} s")
    print(f"study incl. set-up       {t_setup + t_study:7.1f} s")
    print(f"no-op rerun              {t_rerun:7.1f} s")
    print(f"study CPU (user+sys)     {study_cpu:7.1f} s  (jobs {jobs_cpu:.1f} s, other {study_cpu - jobs_cpu:.1f} s)")
    for rule, r in rules.items():
        per_job = r["cpu_seconds_per_job"]
        print(f"  {rule:16s} {r['jobs']:4d} jobs  {r['cpu_seconds']:7.1f} cpu-s  ({per_job:.2f} per job)")
    print(f"snakemake -n says nothing to do: {result['dry_run_nothing_to_do']}")
    print(f"dvc status clean: {result['dvc_status_clean']}")
    for space, s in (report.get("random_archs") or {}).items():
        print(f"random archs [{space}]: mean {s['mean']:.2f}  std {s['std']:.2f}  (n={s['n']})")
    print(f"Kendall tau (supernet vs retrained): {report.get('kendall_tau')}")
    print(result["summary_md"])
    print(f"written to {args.out}")
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
