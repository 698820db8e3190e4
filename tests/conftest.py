"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.e2e import make_project, snakemake


@pytest.fixture(scope="session")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny study run once, uninterrupted, in its own project: tests read it, never change it."""
    project = make_project(tmp_path_factory.mktemp("study"))
    out = snakemake(project)
    assert out.returncode == 0, out.stderr[-4000:]
    return project
