"""The `nasstudy` command: run or inspect a study without learning Snakemake's flags.

Everything it does is plain Snakemake underneath (printed with --verbose); `snakemake --cores all`
in the project folder runs the same DAG.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from nasstudy import integrity, lineage, run_guard, sharing
from nasstudy.config import PROJECT_ROOT, ParamsError, load_params
from nasstudy.project import default_params, dvc_executable, project_dir, snakemake_command

EPILOG = """examples:
  nasstudy run                              the default study (params/default.yaml), all cores
  nasstudy run --params params/my.yaml      another study; its keys overlay params/default.yaml
  nasstudy run --until search               stop after the search jobs
  nasstudy run --dry-run                    list the jobs that would run, run nothing
  nasstudy run -- --forcerun retrain        pass anything after -- to snakemake
  nasstudy status                           what is done, what is pending, where the report is
  nasstudy lineage FILE                     the jobs that made FILE, back to the data; md5s checked
  nasstudy push / nasstudy pull             share the artifacts through the DVC remote
"""


def check_params(path: Path | None) -> dict:
    """Validate before Snakemake starts: one line on stderr and exit code 2 on a bad file."""
    if path is not None and not path.exists():  # a folder or a bad file: load_params says which
        print(f"params error: params file {path} does not exist", file=sys.stderr)
        raise SystemExit(2)
    try:
        return load_params(path, default_params())
    except ParamsError as e:
        print(f"params error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def not_a_project() -> str | None:
    """Why a run must not start in the current folder (it has no Snakefile), or None."""
    if (Path.cwd() / "Snakefile").is_file():
        return None
    where = f" ({PROJECT_ROOT})" if (PROJECT_ROOT / "Snakefile").is_file() else ""
    return (
        f"{Path.cwd()} is not a nasstudy project (no Snakefile here), and a run writes results/, logs/ and "
        f"mlflow.db into the folder it starts in: cd to the project folder{where} and run again. Nothing was written."
    )


def last_jobs_of(params: Path | None, rules: list[str], extra: list[str]) -> list[str]:
    """`--until` targets that reach every job of `rules`. Snakemake's own `--until RULE` never starts
    a job that waits for another job of those rules (it stops after evolve_space gen1, and fails with
    "Out of jobs ready to be started" for `--until init_space evolve_space`), so each pending job of
    `rules` that no other of them needs is named by one of its outputs, from a dry run of the whole
    study; entries that are no rule with pending jobs (files, finished rules) are passed as given."""
    dry = subprocess.run(snakemake_command(params, "1", [*extra, "--dry-run"]), capture_output=True, text=True)
    if dry.returncode != 0:
        return rules  # the real run says what is wrong
    jobs, rule, seen = [], None, set()
    for line in (dry.stdout + dry.stderr).splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):", line):
            rule = m.group(1)
            if rule in rules:
                seen.add(rule)
                jobs.append({"input": [], "output": []})
        elif rule in rules and (m := re.match(r"^\s+(input|output): (.*)$", line)):
            jobs[-1][m.group(1)] = m.group(2).split(", ")
    needed = {f for job in jobs for f in job["input"]}
    last = [job["output"][0] for job in jobs if job["output"] and needed.isdisjoint(job["output"])]
    return last + [r for r in rules if r not in seen]


def html_report_path(study: str) -> Path:
    """Where `nasstudy run` puts the Snakemake HTML report of a study (beside its report/ folder)."""
    return Path("results") / study / "report.html"


def build_html_report(params: Path | None, study: str, verbose: bool = False) -> Path | None:
    """`snakemake --report` for the finished study: the figures, tables and summary.html with their
    workflow/report captions in one file. Returns its path, or None (with a warning) if it failed;
    the study itself stays a success."""
    path = html_report_path(study)
    cmd = snakemake_command(params, "1", ["--report", str(path)])
    if verbose:
        print("+", " ".join(cmd), file=sys.stderr)
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0 or not path.is_file():
        detail = (out.stderr.strip() or out.stdout.strip() or f"exit code {out.returncode}").splitlines()[-1]
        print(f"nasstudy: warning: HTML report not built ({detail}); `snakemake --report {path}` builds it",
              file=sys.stderr)  # fmt: skip
        return None
    return path


def cmd_run(args: argparse.Namespace) -> int:
    params = Path(args.params) if args.params else None
    cfg = check_params(params)
    extra = list(args.snakemake_args)
    if args.profile:
        profile = project_dir() / "workflow" / "profiles" / args.profile
        profile = profile if profile.is_dir() else Path(args.profile)
        if not profile.is_dir():
            known = sorted(p.name for p in (project_dir() / "workflow" / "profiles").iterdir() if p.is_dir())
            print(f"nasstudy: no workflow profile {args.profile!r}; known: {', '.join(known)} (or a folder path)",
                  file=sys.stderr)  # fmt: skip
            return 2
        extra += ["--workflow-profile", str(profile)]
        from nasstudy.mlflow_tracking import tracking_uri

        if profile.name == "slurm" and (uri := tracking_uri(cfg)).startswith("sqlite:"):  # docs/cluster.md
            print(f"nasstudy: warning: MLflow tracking URI is SQLite ({uri}); SLURM jobs on many nodes must not "
                  "share one SQLite file on a network filesystem: start `mlflow server` and set "
                  "MLFLOW_TRACKING_URI=http://HOST:PORT (or params tracking.uri)", file=sys.stderr)  # fmt: skip
    if args.dry_run:
        extra += ["--dry-run"]
    else:
        if problem := not_a_project():
            print(f"nasstudy: {problem}", file=sys.stderr)
            return 2
        reason = run_guard.guard(Path.cwd(), snakemake_command(params, "1", ["--unlock"]))
        if reason:
            print(f"nasstudy: {reason}", file=sys.stderr)
            return 3
        extra += ["--rerun-incomplete"]  # outputs of jobs a dead run left half-done: redo (from checkpoints)
    extra += integrity.recompute_args(cfg, snakemake_command(params, "1", ["--summary"]))  # hand-edited files
    if args.until:
        extra += ["--until", *last_jobs_of(params, args.until, [x for x in extra if x != "--dry-run"])]
    cmd = snakemake_command(params, str(args.cores), extra)
    env = dict(os.environ)
    if args.no_dvc:
        env["NASSTUDY_NO_DVC"] = "1"
    if args.verbose:
        print("+", " ".join(cmd), file=sys.stderr)
    print(
        f"nasstudy: study '{cfg['study']}' -> results/{cfg['study']}/ (logs in logs/{cfg['study']}/)", file=sys.stderr
    )
    started = time.time()
    rc, stopped_by = run_guard.run_snakemake(cmd, env)
    if stopped_by is not None and rc != 0:
        print(f"nasstudy: stopped by {signal.Signals(stopped_by).name}: Snakemake ended its running jobs and "
              "released the folder; finished jobs are kept and `nasstudy run` continues the rest (stopped jobs "
              "from their checkpoints)", file=sys.stderr)  # fmt: skip
        return 128 + stopped_by
    if rc != 0:
        for line in run_guard.job_errors(Path("logs") / cfg["study"], started):
            print(f"nasstudy: failed: {line}", file=sys.stderr)
    elif not args.dry_run and not args.until and Path(f"results/{cfg['study']}/report/summary.md").is_file():
        if html := build_html_report(params, cfg["study"], args.verbose):
            print(f"nasstudy: report: {html}", file=sys.stderr)
    return rc


def pending_jobs(dry_run_output: str) -> dict[str, int]:
    """Jobs per rule from the 'Job stats' table of a Snakemake dry run (empty when nothing is to do)."""
    counts: dict[str, int] = {}
    for line in dry_run_output.splitlines():
        m = re.match(r"^\s*(\w+)\s+(\d+)\s*$", line)
        if m and m.group(1) not in ("all", "total") and m.group(1) not in counts:
            counts[m.group(1)] = int(m.group(2))
    return counts


def missing_outputs(dry_run_output: str) -> list[str]:
    """The files a Snakemake dry run plans to make because they are missing ('Missing output files: ...')."""
    found = re.findall(r"Missing output files: ([^;\n]+)", dry_run_output)
    return sorted({f.strip() for line in found for f in line.split(", ")})


def cmd_status(args: argparse.Namespace) -> int:
    params = Path(args.params) if args.params else None
    cfg = check_params(params)
    study = cfg["study"]
    print(f"study:   {study}")
    print(f"results: results/{study}/")
    cmd = snakemake_command(params, "1", ["--dry-run"])
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        print(out.stderr.strip(), file=sys.stderr)
        return out.returncode
    pending = pending_jobs(out.stdout + out.stderr)
    altered, records, problem = integrity.check(cfg, snakemake_command(params, "1", ["--summary"]))
    if not pending and not altered:
        print("jobs:    all done, nothing to run")
    elif pending:
        print(f"jobs:    {sum(pending.values())} pending: " + ", ".join(f"{r} {n}" for r, n in pending.items()))
    else:
        print("jobs:    the jobs of the altered files below are to rerun, and what depends on them")
    gone = [f for f in missing_outputs(out.stdout + out.stderr) if f in records]
    if gone:
        print(f"missing: {len(gone)} files made by finished jobs: {', '.join(gone)} (`nasstudy run` rebuilds them)")
    for a in altered:
        print(f"altered: {a} (`nasstudy run` recomputes it)")
    if problem:
        print(f"md5s:    not checked: tracking error: {problem}")
    report = Path(f"results/{study}/report/summary.md")
    stale = " (out of date: `nasstudy run` updates it)" if pending or altered else ""
    print(f"report:  {report if report.is_file() else '(not yet made)'}{stale if report.is_file() else ''}")
    if (html := html_report_path(study)).is_file():
        print(f"html:    {html}{stale}")
    if Path(".dvc").is_dir():
        res = subprocess.run([dvc_executable(), "status", "--quiet"], capture_output=True)
        print(
            f"dvc:     {'dvc.lock matches the files' if res.returncode == 0 else 'changed since dvc.lock (dvc status)'}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nasstudy",
        description="Rerun a whole neural-architecture-search study with one command (Snakemake + DVC + MLflow).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="run the study (only what is missing or out of date)",
        description="Validate the params, then run every job that is missing or out of date. Finished jobs "
        "are reused; after success the phases are recorded in dvc.lock and every job is in MLflow.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--params", metavar="FILE", help="params file (default: params/default.yaml)")
    run.add_argument("--cores", default="all", help="CPU cores for parallel jobs (default: all)")
    run.add_argument("--until", nargs="+", metavar="RULE", help="run only up to these rules (e.g. search)")
    run.add_argument("-n", "--dry-run", action="store_true", help="show what would run, run nothing")
    run.add_argument("--profile", help="workflow profile: a folder in workflow/profiles/ or a path")
    run.add_argument("--no-dvc", action="store_true", help="do not update dvc.lock after the run")
    run.add_argument("-v", "--verbose", action="store_true", help="print the snakemake command line")
    run.add_argument("snakemake_args", nargs="*", help="after --: passed to snakemake as they are")
    run.set_defaults(func=cmd_run)
    status = sub.add_parser(
        "status",
        help="what is done and what is pending",
        description="Show which jobs would run (a Snakemake dry run), the report's path and whether "
        "dvc.lock matches the files.",
    )
    status.add_argument("--params", metavar="FILE", help="params file (default: params/default.yaml)")
    status.set_defaults(func=cmd_status)
    lineage.add_parser(sub)
    sharing.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
