"""Hooks fluxgate adds to pytest, so report writers plug in without the harness importing them."""
from __future__ import annotations

import pytest


@pytest.hookspec
def pytest_fluxgate_run_updated(run, final: bool) -> None:
    """The run changed: a test finished (final=False) or the session ended, interrupted or not (final=True).

    `run` is a harness.record.Run; `run.dir` is where its files go.
    """
