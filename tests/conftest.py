"""Fixtures shared by several test modules: the tiny `mobile` space config, the tiny end-to-end study."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from helpers.e2e import make_project, snakemake


@pytest.fixture
def tiny_mobile() -> dict:
    """A fresh copy of the tiny `mobile` space config (helpers.tiny_inputs.SPACE_CFG), so that a test
    that edits it cannot change another's; code that needs it at import time imports the constant."""
    from helpers.tiny_inputs import SPACE_CFG  # here, not at the top: it imports torch and the stages

    return copy.deepcopy(SPACE_CFG)


@pytest.fixture(scope="session")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny study run once, uninterrupted, in its own project: tests read it, never change it."""
    project = make_project(tmp_path_factory.mktemp("study"))
    out = snakemake(project)
    assert out.returncode == 0, out.stderr[-4000:]
    return project
