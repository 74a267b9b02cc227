"""run_tests.py end to end: the default run, a crash and interruptions in a subprocess as a user or CI runs it;
selection, usage errors, gates and reports through run_tests.main() in this interpreter (tests/runs.py)."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runs import ROOT, SELFTEST, command, load_report, run_suites, run_tests


@pytest.fixture
def fast_profile(tmp_path) -> Path:
    """The self-test profile at 64x64, 2 steps, where the tiny reference answers in ~0.05 s: latency over 0.3 s
    fails, and a timing must regress by half to fail a baseline."""
    path = tmp_path / "fast.toml"
    path.write_text(f'name = "fast"\nextends = "{SELFTEST}"\n[settings]\nlatency_runs = 5\n'
                    '[tolerances]\n"latency.*" = 0.5\n"throughput*" = 0.5\n'
                    '[thresholds]\n"latency.p50" = { max = 0.3 }\n')
    return path


@pytest.mark.slow
def test_the_default_run_is_a_real_comparison_and_passes(default_run):
    code, output, report, run_dir = default_run
    assert code == 0, output
    assert report["run"]["status"] == "complete" and report["run"]["verdict"] == "pass"
    assert list(report["categories"]) == ["unit", "integration", "performance", "quality", "stress", "edge_case"]
    assert report["target"]["name"] == "pipeline"  # diffusers, against the reference oracle: not itself
    tests = {t["nodeid"].split("::")[1]: t for t in report["tests"]}
    equivalence = {m["name"]: m for m in tests["test_equivalent_to_the_reference"]["metrics"]}
    assert equivalence["equivalence.max_abs_diff"]["verdict"] == "pass"
    assert equivalence["equivalence.channel_shift"]["threshold"] == {"max": 0.01}
    skipped = [t for t in tests.values() if t["category"] in ("unit", "quality") and t["outcome"] == "skipped"
               and not any(part in t["nodeid"] for part in ("learned_metrics", "optimizations"))]
    assert all("takes no input image" in t["skip_reason"] for t in skipped), skipped  # tiny-dev does not edit
    # every metric a suite recorded is in the catalogue, and every threshold of cpu-tiny but the edits' gated something
    from harness.metrics import catalogue

    for m in (m for t in report["tests"] for m in t["metrics"]):
        d = catalogue.find(m["name"])
        assert d is not None and (d.unit, d.better) == (m["unit"], m["better"]), (m["name"], d)
    assert report["profile"]["unmatched"] == ["edit.input_mean_abs_diff"]  # an edit's gate: tiny-dev does not edit
    cold = {m["name"] for m in tests["test_cold_start"]["metrics"]}
    assert {"cold_start.interpreter", "cold_start.imports", "cold_start.load", "cold_start.first_request"} <= cold
    assert {"report.json", "report.html", "junit.xml"} <= {p.name for p in run_dir.iterdir()}
    assert "fluxgate: PASS" in output and "performance" in output


def test_category_selects_suites(tmp_path):
    code, _, report = run_suites("--category", "unit", "--category", "edge_cases", out=tmp_path)
    assert code == 0
    assert set(report["categories"]) == {"unit", "edge_case"}


def test_a_test_outside_suites_is_reported_and_its_failure_fails_the_run(tmp_path):
    # a file named on the command line runs with the suites: its failure fails the summary and the report as it
    # fails the exit code (it used to exit 1 under a PASS, missing from the report)
    outside = tmp_path / "elsewhere" / "test_outside.py"
    outside.parent.mkdir()
    outside.write_text("import pytest\n"
                       "def test_outside_fails():\n    assert 1 == 2\n"
                       "def test_outside_passes():\n    pass\n"
                       "def test_outside_skips():\n    pytest.skip('not here')\n")
    code, output, report = run_suites("-k", "outside or schedule_and_shift", str(outside), out=tmp_path / "out")
    assert code == 1 and "fluxgate: FAIL" in output, output
    assert report["run"]["verdict"] == "fail" and report["categories"]["unit"]["verdict"] == "pass"
    assert report["categories"]["other"] == {"pass": 1, "fail": 1, "skip": 1, "verdict": "fail"}
    outside_tests = {t["nodeid"].split("::")[-1]: t for t in report["tests"] if t["category"] is None}
    assert {name: t["outcome"] for name, t in outside_tests.items()} == \
        {"test_outside_fails": "failed", "test_outside_passes": "passed", "test_outside_skips": "skipped"}
    assert outside_tests["test_outside_fails"]["message"] == "assert 1 == 2"
    junit = (next((tmp_path / "out").iterdir()) / "junit.xml").read_text()
    assert 'tests="4" failures="1" errors="0" skipped="1"' in junit


@pytest.mark.parametrize("args,message", [
    (["--category", "perf"], "--category 'perf': not a suite"),
    (["--target", "refrence"], "did you mean 'reference'"),
    (["--target", "reference:dtype=fp12"], "dtype='fp12'"),
    (["--profile", "nope"], "profile 'nope'"),
    (["--baseline", "/no/such/report.json"], "baseline '/no/such/report.json'"),
    (["--load-engine", "locust"], "--load-engine locust: Locust's workers load a target served elsewhere"),
    (["--load-engine", "locust", "--target", "http://127.0.0.1:9", "--locust-workers", "0"],
     "need one worker or more"),
])
def test_usage_errors_exit_2_with_one_line(tmp_path, args, message):
    code, output, report = run_suites(*args, out=tmp_path)
    assert code == 2 and message in output and "Traceback" not in output
    assert report is None  # nothing ran, nothing to report


@pytest.mark.parametrize("text,message", [
    ("[settings]\nlatncy_runs = 5\n", "[settings] 'latncy_runs' is not one fluxgate knows; did you mean 'latency_runs'?"),
    ('[thresholds]\n"throughput.api" = { min = 10 }\n', "did you mean 'throughput'?"),
])
def test_a_profile_typo_is_a_usage_error_naming_the_key(tmp_path, text, message):
    profile = tmp_path / "typo.toml"
    profile.write_text(text)
    code, output, report = run_tests("--profile", str(profile), out=tmp_path / "out")
    assert code == 2 and message in output and "Traceback" not in output and report is None


def test_an_internal_error_is_not_a_target_unavailable(tmp_path, monkeypatch):
    # a plugin that breaks inside pytest: pytest's INTERNALERROR, its exit 3, which is not "unavailable"
    (tmp_path / "broken_plugin.py").write_text("def pytest_collection_modifyitems(items):\n    raise RuntimeError('bug')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code, output, _ = run_suites("-p", "broken_plugin", "--category", "unit", out=tmp_path / "out")
    assert code == 4 and "INTERNALERROR" in output and "bug" in output


def test_a_baseline_from_another_target_is_refused_unless_forced(tmp_path, fast_profile):
    args = ("--category", "performance", "-k", "warm_latency", "--profile", str(fast_profile))
    code, output, _ = run_suites(*args, out=tmp_path / "base")
    assert code == 0, output
    baseline = str(next((tmp_path / "base").glob("*/report.json")))
    code, output, report = run_suites(*args, "--baseline", baseline, "--target", "reference", out=tmp_path / "other")
    assert code == 2 and "target 'reference' (the baseline's: 'pipeline:preset=tiny-dev')" in output
    assert "--force-baseline" in output and report is None
    code, output, report = run_suites(*args, "--baseline", baseline, "--target", "reference", "--force-baseline",
                                     out=tmp_path / "forced")
    assert code in (0, 1) and report["baseline"] == baseline


def test_unavailable_target_exits_3_with_the_reason(tmp_path):
    code, output, report = run_suites("--target", "tests.fakes:Flawed:refuse_start=connection refused on :8000",
                                     "--category", "integration", out=tmp_path)
    assert code == 3 and "connection refused on :8000" in output
    assert report["run"]["status"] == "target_unavailable" and report["run"]["verdict"] == "error"


def test_threshold_gate_fails_a_slow_target_and_passes_the_reference(tmp_path, fast_profile):
    args = ("--category", "performance", "-k", "warm_latency", "--profile", str(fast_profile))
    code, output, report = run_suites(*args, out=tmp_path / "plain")
    assert code == 0, output
    code, output, report = run_suites(*args, "--target", "tests.fakes:Flawed:delay=0.5", out=tmp_path / "slow")
    assert code == 1
    assert "gate failed: latency.p50" in output and "above the maximum 0.3" in output
    (test,) = report["tests"]
    p50 = next(m for m in test["metrics"] if m["name"] == "latency.p50")
    assert p50["verdict"] == "fail" and p50["value"] > 0.5 and test["verdict"] == "fail"
    assert report["run"]["verdict"] == "fail" and report["categories"]["performance"]["verdict"] == "fail"


def test_baseline_gate_fails_a_regression_beyond_tolerance(tmp_path, fast_profile):
    # the threshold is lifted so that only the baseline can fail the run
    fast_profile.write_text(fast_profile.read_text().replace("max = 0.3", "max = 100"))
    args = ("--category", "performance", "-k", "warm_latency", "--profile", str(fast_profile))
    code, _, _ = run_suites(*args, out=tmp_path / "base")
    assert code == 0
    baseline = str(next((tmp_path / "base").glob("*/report.json")))
    code, output, report = run_suites(*args, "--baseline", baseline, out=tmp_path / "same")
    assert code == 0, output  # the same target again: within tolerance
    code, output, report = run_suites(*args, "--baseline", baseline, "--target", "tests.fakes:Flawed:delay=0.2",
                                     "--force-baseline", out=tmp_path / "slower")  # the same pipeline, slowed
    assert code == 1 and "regressed from the baseline" in output
    p50 = next(m for m in report["tests"][0]["metrics"] if m["name"] == "latency.p50")
    assert p50["baseline"] is not None and p50["value"] > 1.5 * p50["baseline"] and p50["verdict"] == "fail"
    html = next((tmp_path / "slower").glob("*/report.html")).read_text()
    assert "<b>against the baseline: 4 metrics</b>" in html  # p50, p95, p99, throughput.sequential: a chart


def test_a_target_that_dies_mid_run_still_gets_a_report(tmp_path):
    # the server behind a target stops answering after two requests: later tests fail, the report is whole
    code, output, report = run_suites("--target", "tests.fakes:Flawed:fail_after=2", "--category", "integration",
                                      out=tmp_path)
    assert code == 1
    assert report["run"]["status"] == "complete" and report["run"]["verdict"] == "fail"
    failed = [t for t in report["tests"] if t["outcome"] == "failed"]
    assert any("died after 2 requests" in t["message"] for t in failed)
    # a test that counts failures (the smoke set's success rate) fails by its gate instead
    assert all("died after 2 requests" in t["message"] or t["message"].startswith("gate failed") for t in failed)
    assert (next(tmp_path.iterdir()) / "report.html").is_file()


@pytest.mark.slow
def test_a_crash_leaves_the_report_as_of_the_last_test(tmp_path):
    # an in-process target that takes the process down: report.json holds every test finished before
    code, _, report = run_tests("--target", "tests.fakes:Flawed:die_after=3", out=tmp_path)
    assert code == 17
    assert report["run"]["status"] == "running" and report["run"]["verdict"] == "error"
    assert len(report["tests"]) >= 1 and all(t["outcome"] in ("passed", "skipped") for t in report["tests"])


@pytest.mark.slow
def test_an_interrupted_run_writes_all_reports(tmp_path):
    """Ctrl-C and a timeout's SIGTERM, each to a run of its own, the two side by side: either way the run stops,
    exits 1, and every report says it was interrupted."""
    runs = {sig: interruptible(tmp_path / sig.name) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        deadline = time.monotonic() + 120
        waiting = dict(runs)
        while waiting:  # each is signalled once its first test has finished and been recorded
            for sig, (proc, out) in list(waiting.items()):
                assert proc.poll() is None and time.monotonic() < deadline, \
                    proc.stdout.read() if proc.poll() is not None else "slow"
                if load_report(out) is not None:
                    proc.send_signal(sig)
                    del waiting[sig]
            time.sleep(0.2)
        outputs = {sig: proc.communicate(timeout=60)[0] for sig, (proc, _) in runs.items()}
    finally:  # a run that did not stop must not go on eating the CPU the next tests measure with
        for proc, _ in runs.values():
            proc.kill()
            proc.wait()
    for sig, (proc, out) in runs.items():
        assert proc.returncode == 1, (sig.name, outputs[sig])
        report = load_report(out)
        assert report["run"]["status"] == "interrupted" and report["run"]["verdict"] == "error", sig.name
        assert report["tests"] and report["run"]["finished"] is not None
        run_dir = next(out.iterdir())
        assert "did not finish (interrupted)" in (run_dir / "report.html").read_text()
        assert (run_dir / "junit.xml").is_file()


def interruptible(out: Path) -> tuple[subprocess.Popen, Path]:
    """A whole run of a slowed target in a subprocess, reporting to OUT. A shell's background job inherits SIGINT
    ignored, and Python keeps an inherited SIG_IGN: the run gets the Ctrl-C a terminal would give it."""
    args = command(("--target", "tests.fakes:Flawed:delay=1.5"), out, SELFTEST)
    proc = subprocess.Popen([sys.executable, str(ROOT / "run_tests.py"), *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return proc, out
