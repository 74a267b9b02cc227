"""Writes the run's reports as it goes: report.json after every test, all three at the end.

So a run that is interrupted, times out or loses its target still leaves what it recorded; a run whose
process is killed outright leaves report.json as of its last finished test, with status "running".
"""
from __future__ import annotations

from reports.html import write_html
from reports.json_report import write_json
from reports.junit import write_junit


def pytest_fluxgate_run_updated(run, final):
    run.dir.mkdir(parents=True, exist_ok=True)
    write_json(run)
    if final:
        write_html(run)
        write_junit(run)
