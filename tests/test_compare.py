"""python -m reports.compare: runs side by side, a regression named and failing the comparison, in a browser."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from browser import inspect

from reports.compare import main
from runs import PLUGINS, captured

SUITE = '''
def test_speed(recorder):
    recorder.percentiles("latency", [0.10, 0.11, 0.12, 0.10, 0.13])
    recorder.metric("throughput", 10, "images/s", better="higher")
    recorder.metric("unit.text.pooled_dim", 32)
'''


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A run of one small suite (the base), and copies of it 2% slower (noise) and twice as slow, as
    report.json files that differ from the run's in their id and timings alone."""
    folder = tmp_path_factory.mktemp("compare")
    (folder / "suites" / "performance").mkdir(parents=True)
    (folder / "suites" / "performance" / "test_p.py").write_text(SUITE)
    subprocess.run([sys.executable, "-m", "pytest", *PLUGINS, "--run-id", "x1"], cwd=folder, check=False,
                   capture_output=True)
    found = {"1": folder / "results" / "x1"}
    for scale in (1.02, 2):
        report = json.loads((found["1"] / "report.json").read_text())
        report["run"]["id"] = f"x{scale}"
        for m in report["tests"][0]["metrics"]:
            m["value"] *= {"s": scale, "images/s": 1 / scale}.get(m["unit"], 1)
        found[str(scale)] = folder / "results" / f"x{scale}"
        found[str(scale)].mkdir()
        (found[str(scale)] / "report.json").write_text(json.dumps(report))
    return found


def test_a_slower_run_regresses_and_fails_the_comparison(runs, tmp_path):
    code, output = captured(main, [str(runs["1"]), str(runs["2"] / "report.json"), "--out", str(tmp_path)])
    assert code == 1 and "regressed" in output
    result = json.loads((tmp_path / "compare.json").read_text())
    rows = {r["metric"]: r for r in result["rows"]}
    assert rows["latency.p50"]["verdicts"] == ["regressed"] and rows["latency.p50"]["changes"][1] == pytest.approx(100)
    assert rows["throughput"]["verdicts"] == ["regressed"] and rows["unit.text.pooled_dim"]["verdicts"] == ["info"]
    assert result["summary"]["regressed"] == 4  # p50, p95, p99 and throughput
    markdown = (tmp_path / "compare.md").read_text()
    assert "| ❌ | `latency.p50` | `test_speed` | 0.11 s | 0.22 s | +100.0% |" in markdown
    html = (tmp_path / "compare.html").read_text()
    assert "REGRESSED" in html and html.index("What regressed") < html.index("Every shared metric")


def test_noise_within_tolerance_is_the_same(runs, tmp_path):
    code, output = captured(main, [str(runs["1"]), str(runs["1.02"]), "--out", str(tmp_path)])
    assert code == 0, output
    verdicts = {r["metric"]: r["verdicts"][-1] for r in json.loads((tmp_path / "compare.json").read_text())["rows"]}
    assert verdicts["latency.p50"] == "same" and verdicts["throughput"] == "same"


def test_a_series_of_runs_draws_trends(runs, tmp_path):
    code, _ = captured(main, [str(runs[s]) for s in ("1", "1.02", "2")] + ["--out", str(tmp_path)])
    html = (tmp_path / "compare.html").read_text()
    assert code == 1 and "Trends" in html and "trends 1-4 of 4" in html  # p50, p95, p99, throughput


@pytest.mark.parametrize("args, message", [
    (["one"], "1 run given; it compares two or more"),
    (["nowhere", "nowhere"], "'nowhere': no report.json there"),
])
def test_usage_errors_exit_2_naming_the_problem(args, message, tmp_path):
    code, output = captured(main, args + ["--out", str(tmp_path)])
    assert code == 2 and message in output


def test_compare_html_in_a_browser(runs, tmp_path, browser, screenshots):
    captured(main, [str(runs[s]) for s in ("1", "1.02", "2")] + ["--out", str(tmp_path)])
    found = inspect(browser, tmp_path / "compare.html", screenshots / "compare.png")
    assert found.clean, found
    assert found.images == 2 and found.verdict_top is not None and found.verdict_top < 100  # changes, trends


def test_each_run_is_set_against_the_first_by_its_own_profile(runs, tmp_path):
    other = json.loads((runs["1"] / "report.json").read_text())
    other["run"]["id"], other["profile"]["name"] = "other", "cpu-tiny-optimized"
    del other["baseline_target"]  # as a report of an older fluxgate may lack it
    (tmp_path / "other.json").write_text(json.dumps(other))
    same = ["--out", str(tmp_path / "same"), "--profile", "cpu-tiny-optimized"]
    code, _ = captured(main, [str(runs["1"]), str(runs["1.02"]), *same])
    assert code == 0 and json.loads((tmp_path / "same" / "compare.json").read_text())["summary"]["differences"] == []
    code, _ = captured(main, [str(runs["1"]), str(tmp_path / "other.json"), "--out", str(tmp_path / "other")])
    differences = json.loads((tmp_path / "other" / "compare.json").read_text())["summary"]["differences"]
    assert "other: profile 'cpu-tiny-optimized' (the baseline's: 'cpu-tiny')" in differences


def test_a_report_missing_its_tests_is_a_usage_error(runs, tmp_path):
    (tmp_path / "broken.json").write_text(json.dumps({"run": {"id": "broken"}, "profile": {"name": "x"}}))
    code, output = captured(main, [str(runs["1"]), str(tmp_path / "broken.json"), "--out", str(tmp_path)])
    assert code == 2 and "a report lacks the field 'tests'" in output
