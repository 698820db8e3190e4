"""What the Snakefile needs beside its rules: the params a stage sees, code hashes for staleness (a
rule's stage module and its import closure), and the hooks that open the study's MLflow parent run
and record finished work in DVC."""

from __future__ import annotations

import ast
import copy
import functools
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from nasstudy.config import PROJECT_ROOT
from nasstudy.project import dvc_executable

PACKAGE_ROOT = Path(__file__).resolve().parent
PACKAGE = "nasstudy"
MODULE_STRING = re.compile(r"nasstudy(\.\w+)+(:\w+)?")  # a module named in a string (a lazy registry)


def stage_params(config: dict, *sections: str, **extra: object) -> dict:
    """Seed, study, device, amp and threads plus only the named sections, so that an unrelated change
    to the params does not rerun the stage. `space` also gets the data's image size and classes."""
    params = {k: config[k] for k in ("seed", "study", "device", "amp", "threads") if k in config}  # bench: no amp
    for name in sections:
        params[name] = copy.deepcopy(config[name])
    params.update(copy.deepcopy(extra))
    if "space" in params and "data" in config:
        params["space"]["image_size"] = config["data"]["image_size"]
        params["space"]["num_classes"] = config["data"]["num_classes"]
    return sorted_keys(params)


def sorted_keys(obj: object) -> object:
    """Mappings with their keys sorted, recursively: Snakemake compares params as text, so the
    order of keys in a params file must not decide whether a job reruns."""
    if isinstance(obj, dict):
        return {k: sorted_keys(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list):
        return [sorted_keys(v) for v in obj]
    return obj


def stage_code(rule: str) -> str:
    """The code hash of study rule `rule`: its stage module nasstudy.stages.<rule> (what the runner imports)
    and every nasstudy module that module reaches (`import_closure`), so an edit to any of them, even
    one imported indirectly, reruns the rule and an edit elsewhere does not."""
    return module_code(f"{PACKAGE}.stages.{rule}")


def module_code(module: str) -> str:
    """The code hash of nasstudy module `module` and its import closure (a benchmark rule's `stage`)."""
    return files_hash(import_closure(module))


def files_hash(files: list[Path]) -> str:
    """A short hash of these package files' names and contents."""
    h = hashlib.sha256()
    for f in sorted(set(files)):
        h.update(str(f.relative_to(PACKAGE_ROOT)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def import_closure(module: str) -> list[Path]:
    """The files of `module` and of every nasstudy module it imports, directly or not (function-level
    imports too), with the packages' __init__.py that importing them runs. Static (ast): nothing is
    imported. A module that does not exist raises with its name."""
    seen: dict[str, Path] = {}
    todo = [(module, "the caller")]
    while todo:
        name, importer = todo.pop()
        if name in seen:
            continue
        path = module_file(name)
        if path is None:
            raise ModuleNotFoundError(f"no module {name} (imported by {importer}) under {PACKAGE_ROOT}")
        seen[name] = path
        parent = name.rpartition(".")[0]
        todo += [(parent, name)] if parent else []  # importing a.b runs a/__init__.py
        todo += [(m, str(path.relative_to(PACKAGE_ROOT))) for m in module_imports(path, name)]
    return sorted(seen.values())


def module_file(name: str) -> Path | None:
    """The file of nasstudy module `name` (a .py file or a package's __init__.py), None if there is none."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_ROOT.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def module_imports(path: Path, name: str) -> list[str]:
    """The nasstudy modules that module `name` (at `path`) imports. Those it surely imports must exist
    (import_closure raises); a maybe-module (b in `from a import b`, a string) counts where it exists."""
    stat = path.stat()
    found = _imports(path, stat.st_mtime_ns, stat.st_size, name)
    return [m for m, sure in found if sure or module_file(m)]


@functools.cache
def _imports(path: Path, _mtime_ns: int, _size: int, name: str) -> tuple[tuple[str, bool], ...]:
    """(module, surely imported) for each nasstudy module the file names; parsed once per file version."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, True) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.append((base, True))  # from a import b: b is a module of package a, or a name in module a
            found += [(f"{base}.{a.name}", False) for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_STRING.fullmatch(node.value):
            found.append((node.value.partition(":")[0], False))  # a registry's "nasstudy.methods.rea:Class"
    return tuple(dict.fromkeys(f for f in found if f[0].split(".")[0] == PACKAGE))


def on_start(config: dict) -> None:
    """Open (or find) the study's MLflow parent run once, serially, before any job starts.
    An unreachable tracking server (with `tracking.required`) stops here with one line, not
    minutes later inside every job's MLflow retries."""
    from nasstudy import mlflow_tracking as mt

    try:
        mt.ensure_study_run(config)
    except (mt.TrackingUnavailable, *mt.store_errors()) as e:  # also a corrupt or locked mlflow.db
        print(f"tracking error: {mt.tracking_failure(mt.effective_tracking_uri(config), e)}", file=sys.stderr)
        raise SystemExit(1) from None


def on_finish(config: dict, success: bool, artifacts: list[str] | None = None) -> None:
    """Close the parent run and record in dvc.lock every phase whose `artifacts` (the study's output
    files) all exist and are what their jobs wrote, after a failed run too: what finished is recorded;
    a phase with a failed job (Snakemake removed its outputs) keeps its old record."""
    from nasstudy import mlflow_tracking
    from nasstudy.checkpoint import clear_finished

    try:
        mlflow_tracking.finish_study_run(config, success)
    finally:
        dvc_commit(config, artifacts=artifacts)
        if success:  # every job of this run is recorded: their last checkpoints are no longer needed
            clear_finished(config["study"])


def dvc_stages_for(study: str, workdir: Path, unfinished: dict[str, str] | None = None) -> list[str]:
    """The dvc.yaml stages whose outputs belong to `study` and all exist (those can be committed), but
    none holding a file of `unfinished` (path -> why: missing, altered); one line says why for those."""
    dvc_yaml = workdir / "dvc.yaml"
    if not dvc_yaml.is_file():
        return []
    stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {})
    names = []
    for name, stage in stages.items():
        outs = [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", [])]
        if not outs or not all(o.startswith(f"results/{study}/") and (workdir / o).exists() for o in outs):
            continue
        bad = sorted(p for p in unfinished or {} if any(p.startswith(o.rstrip("/") + "/") for o in outs))
        if bad:
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            print(f"nasstudy: dvc.lock keeps its old record of phase {name}: {bad[0]} {unfinished[bad[0]]}{more}; "
                  "`nasstudy run` makes it", file=sys.stderr)  # fmt: skip
        else:
            names.append(name)
    return names


def unfinished_files(config: dict, artifacts: list[str], workdir: Path) -> dict[str, str]:
    """The study's files that dvc.lock must not record yet: missing ones (a job that failed or never ran)
    and altered ones (not what their job wrote, nasstudy.integrity)."""
    from nasstudy import integrity
    from nasstudy import mlflow_tracking as mt

    bad = {a: "is missing (its job did not finish)" for a in artifacts if not (workdir / a).exists()}
    try:
        bad.update({a.path: f"is altered ({a})" for a in integrity.altered_files(config, workdir)})
    except (mt.TrackingUnavailable, *mt.store_errors()) as e:
        why = mt.tracking_failure(mt.tracking_uri(config, workdir), e)
        print(f"nasstudy: warning: md5s not checked before dvc commit: {why}", file=sys.stderr)
    return bad


def dvc_commit(config: dict, workdir: Path | None = None, artifacts: list[str] | None = None) -> None:
    """`dvc commit` the finished phases so that dvc.lock holds their hashes and `dvc status` is clean.
    Skipped inside `dvc repro` (which records by itself) and where the folder is no DVC repo.
    With `artifacts` (every output file of the study), phases with a missing or altered file are not."""
    workdir = Path(workdir or os.getcwd())
    if os.environ.get("NASSTUDY_NO_DVC") or not (workdir / ".dvc").is_dir():
        return
    unfinished = unfinished_files(config, artifacts, workdir) if artifacts is not None else None
    names = dvc_stages_for(config["study"], workdir, unfinished)
    if not names:
        return
    cmd = [dvc_executable(), "commit", "--force", "--quiet", *names]
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if result.returncode != 0:
        detail = (result.stderr.strip() or result.stdout.strip() or f"exit code {result.returncode}").splitlines()[-1]
        print(f"warning: dvc commit failed ({detail}); `dvc commit` records the phases by hand", file=sys.stderr)


__all__ = [
    "PROJECT_ROOT",
    "stage_params",
    "stage_code",
    "module_code",
    "import_closure",
    "on_start",
    "on_finish",
    "dvc_commit",
]
