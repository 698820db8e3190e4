"""`nasstudy push` / `nasstudy pull`: share a study's artifacts through a DVC remote.

DVC holds the record (dvc.lock, committed to git) and the files (the remote); these commands are
`dvc push` / `dvc pull` plus what makes a pulled clone trust its files: after a pull whose files all
match dvc.lock, `snakemake --touch` gives the outputs timestamps in DAG order, so that the study
command recomputes nothing (Snakemake would otherwise rerun jobs whose inputs arrived later than
their outputs).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from nasstudy.project import dvc_executable, snakemake_command


def dvc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([dvc_executable(), *args], capture_output=True, text=True)


def fail(message: str) -> int:
    print(f"nasstudy: {message}", file=sys.stderr)
    return 2


def check_repo() -> str | None:
    """None in a DVC repo with a remote; else what is missing, in one line."""
    if not Path(".dvc").is_dir():
        return "this folder is no DVC repository (no .dvc/); run the command in the project folder"
    remotes = dvc("remote", "list")
    if remotes.returncode != 0 or not remotes.stdout.strip():
        return "no DVC remote is configured; add one first, e.g. `dvc remote add -d storage /shared/nasstudy-store`"
    return None


def lost_files(remote: list[str]) -> list[str]:
    """Outputs dvc.lock records (files, or a folder whose listing is gone) that are in neither the
    cache nor the remote: `dvc push` only warns about them ("Missing cache files") and exits 0, and
    a clone could never pull them."""
    res = dvc("data", "status", "--granular", "--not-in-remote", "--json", *remote)
    status = json.loads(res.stdout or "{}") if res.returncode == 0 else {}
    gone = sorted(set(status.get("not_in_cache", [])) & set(status.get("not_in_remote", [])))
    return [f for f in gone if not f.endswith("/")] or gone  # the files, not also their folder


def cmd_push(args: argparse.Namespace) -> int:
    if problem := check_repo():
        return fail(problem)
    extra = ["--remote", args.remote] if args.remote else []
    if lost := lost_files(extra):
        return fail(
            f"{len(lost)} output(s) that dvc.lock records are neither in the DVC cache nor on the remote "
            f"(first: {lost[0]}); nothing was pushed. `nasstudy run` puts the finished results back in the "
            "cache (dvc commit) and redoes what is gone; then push again"
        )
    res = subprocess.run([dvc_executable(), "push", *extra])
    if res.returncode != 0:
        return fail("dvc push failed (see above)")
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "dvc.lock"], capture_output=True, text=True)
    if dirty.stdout.strip():
        print("nasstudy: pushed. Commit dvc.lock (git add dvc.lock && git commit) so that clones know what to pull.")
    else:
        print("nasstudy: pushed; dvc.lock is committed, so a clone can `nasstudy pull`.")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    if problem := check_repo():
        return fail(problem)
    extra = ["--remote", args.remote] if args.remote else []
    res = subprocess.run([dvc_executable(), "pull", *extra])
    if res.returncode != 0:
        return fail("dvc pull failed (see above); nothing was marked up to date")
    status = dvc("status", "--json")
    if status.returncode != 0 or json.loads(status.stdout or "{}") != {}:
        return fail("the pulled files do not all match dvc.lock (`dvc status`); nothing was marked up to date")
    params = Path(args.params) if args.params else None
    touch = subprocess.run(snakemake_command(params, "1", ["--touch", "--quiet"]), capture_output=True, text=True)
    if touch.returncode != 0:
        tail = (touch.stderr.strip().splitlines() or ["?"])[-1]
        return fail(f"pulled, but marking the outputs up to date failed: {tail}")
    print("nasstudy: pulled; every output matches dvc.lock and is up to date (`nasstudy run` has nothing to do).")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    push = sub.add_parser(
        "push",
        help="upload the study's artifacts to the DVC remote",
        description="`dvc push` of every artifact recorded in dvc.lock. Configure a remote once with "
        "`dvc remote add -d NAME URL` (a folder, ssh://, s3://...), and commit dvc.lock.",
    )
    push.add_argument("--remote", help="DVC remote name (default: the default remote)")
    push.set_defaults(func=cmd_push)
    pull = sub.add_parser(
        "pull",
        help="download the artifacts dvc.lock records, and mark them up to date",
        description="`dvc pull`, a check that every file matches dvc.lock, then `snakemake --touch` so that "
        "`nasstudy run` recomputes nothing in this clone.",
    )
    pull.add_argument("--remote", help="DVC remote name (default: the default remote)")
    pull.add_argument("--params", metavar="FILE", help="params file of the study (default: params/default.yaml)")
    pull.set_defaults(func=cmd_pull)
