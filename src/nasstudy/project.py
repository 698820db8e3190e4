"""The project a command works on and the tools it drives: where its Snakefile and default params
are, and the Snakemake and DVC command lines. Kept below `cli`, `lineage` and `sharing` so that
they all import it and none of them imports another's entry point."""

from __future__ import annotations

import sys
from pathlib import Path

from nasstudy.config import DEFAULT_PARAMS, PROJECT_ROOT


def project_dir() -> Path:
    """The project whose Snakefile and params/default.yaml are used: the current folder when it has a
    Snakefile (a clone, a copy), else the one this package was installed from."""
    return Path.cwd() if (Path.cwd() / "Snakefile").is_file() else PROJECT_ROOT


def default_params() -> Path:
    """params/default.yaml of `project_dir()`: the file every --params file overlays."""
    return project_dir() / DEFAULT_PARAMS.relative_to(PROJECT_ROOT)


def snakemake_command(params: Path | None, cores: str, extra: list[str]) -> list[str]:
    """`snakemake` on the project's Snakefile; `--configfile` only for a params file other than the default."""
    project = project_dir()
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(project / "Snakefile"), "--cores", cores]
    if params is not None and params.resolve() != default_params().resolve():
        cmd += ["--configfile", str(params)]
    return cmd + extra


def dvc_executable() -> str:
    """The `dvc` beside this Python (the project's venv), else whatever `dvc` is on PATH."""
    dvc = Path(sys.executable).with_name("dvc")
    return str(dvc) if dvc.exists() else "dvc"
