"""Wall time of the README's study command on a fresh clone: set-up, first run, no-op rerun.

    python benchmarks/bench_study.py                 # fresh clone + fresh venv (the honest figure)
    python benchmarks/bench_study.py --keep DIR      # keep the clone in DIR for inspection

Prints a table and writes benchmarks/results/study.json. Also records what the issue asks to
see from the default study: the random-arch accuracy spread and Kendall's tau from the report,
`snakemake -n` and `dvc status` after the run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    return time.perf_counter() - start, out


def check(out: subprocess.CompletedProcess, what: str) -> None:
    if out.returncode != 0:
        raise SystemExit(f"{what} failed ({out.returncode}):\n{out.stderr[-3000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", type=Path, help="clone into this folder and keep it")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "study.json")
    args = ap.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="nasstudy-bench-"))
    clone = base / "nasstudy"
    if clone.exists():
        shutil.rmtree(clone)
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env_note = {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()}

    t_setup, out = timed(["bash", "scripts/setup.sh"], clone)
    check(out, "setup")
    t_study, out = timed(["bash", "scripts/study.sh"], clone)
    check(out, "study")
    t_rerun, out = timed(["bash", "scripts/study.sh"], clone)
    check(out, "rerun")
    _, dry = timed([str(clone / ".venv/bin/snakemake"), "-n"], clone)
    _, dvc = timed([str(clone / ".venv/bin/dvc"), "status", "--json"], clone)
    report = json.loads((clone / "results/default/report/report.json").read_text())
    result = {
        "setup_seconds": round(t_setup, 1),
        "study_seconds": round(t_study, 1),
        "study_with_setup_seconds": round(t_setup + t_study, 1),
        "noop_rerun_seconds": round(t_rerun, 1),
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
