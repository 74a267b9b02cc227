"""The pytest plugin, run inside pytester on small suites written for each test."""
from __future__ import annotations

import json

import pytest

PLUGINS = ["-p", "harness.plugin", "-p", "reports.plugin", "-p", "no:cacheprovider"]


def report(pytester) -> dict:
    """The newest run's report.json."""
    path = max(pytester.path.glob("results/*/report.json"), key=lambda p: p.stat().st_mtime_ns)
    return json.loads(path.read_text())


@pytest.fixture
def suites(pytester):
    """suites/<category>/test_*.py files, and one test outside suites/."""
    def write(files: dict[str, str]):
        for name, body in files.items():
            path = pytester.path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
    return write


def test_markers_and_fixtures_are_documented(pytester):
    out = pytester.runpytest(*PLUGINS, "--markers").stdout.str()
    for marker in ("unit:", "integration:", "performance:", "quality:", "stress:", "edge_case:", "gpu:", "slow:",
                   "benchmark:"):
        assert f"@pytest.mark.{marker}" in out
    out = pytester.runpytest(*PLUGINS, "--fixtures").stdout.str()
    for fixture in ("target [session scope]", "reference [session scope]", "recorder", "profile [session scope]"):
        assert fixture in out
    assert "fluxgate: the target under test" in pytester.runpytest(*PLUGINS, "--help").stdout.str()


def test_category_comes_from_the_folder(pytester, suites):
    suites({"suites/performance/test_p.py": "def test_p(): pass\n",
            "suites/edge_cases/test_e.py": "def test_e(): pass\n",
            "other/test_o.py": "def test_o(): pass\n"})
    pytester.runpytest(*PLUGINS, "-m", "performance").assert_outcomes(passed=1, deselected=2)
    pytester.runpytest(*PLUGINS, "-m", "edge_case or performance").assert_outcomes(passed=2, deselected=1)
    # only suite tests make the report
    assert [t["category"] for t in report(pytester)["tests"]] == ["edge_case", "performance"]


def test_gpu_and_slow_tests_skip_with_reasons(pytester, suites):
    suites({"suites/unit/test_marks.py": "import pytest\n"
            "@pytest.mark.gpu\ndef test_gpu(): pass\n"
            "@pytest.mark.slow\ndef test_slow(): pass\n"
            "def test_plain(): pass\n"})
    pytester.runpytest(*PLUGINS, "--skip-slow", "--skip-gpu").assert_outcomes(passed=1, skipped=2)
    reasons = {t["nodeid"].split("::")[1]: t["skip_reason"] for t in report(pytester)["tests"]}
    assert reasons["test_gpu"] in ("needs a CUDA device", "--skip-gpu")  # the first where there is no CUDA
    assert reasons["test_slow"] == "--skip-slow" and reasons["test_plain"] is None


def test_a_metric_over_its_threshold_fails_the_test(pytester, suites):
    suites({"suites/performance/test_m.py":
            "def test_slow(recorder):\n    recorder.metric('latency.p50', 7.5, 's', better='lower')\n"
            "def test_fast(recorder):\n    recorder.metric('latency.p50', 0.5, 's', better='lower')\n"})
    result = pytester.runpytest(*PLUGINS)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*fluxgate: FAIL*", "gate failed: latency.p50 = 7.5s is above the maximum 2 *test_slow*"])
    tests = {t["nodeid"].split("::")[1]: t for t in report(pytester)["tests"]}
    assert tests["test_slow"]["verdict"] == "fail" and tests["test_slow"]["metrics"][0]["threshold"] == {"max": 2.0}
    assert tests["test_fast"]["verdict"] == "pass"


def test_recordings_travel_from_xdist_workers(pytester, suites):
    suites({f"suites/quality/test_{i}.py":
            "import numpy as np\n"
            f"def test_{i}(recorder):\n"
            f"    recorder.metric('psnr', {60 + i}, 'dB', better='higher')\n"
            f"    recorder.image('img', np.full((8, 8, 3), {i}, np.uint8))\n" for i in range(4)})
    result = pytester.runpytest_subprocess(*PLUGINS, "-n", "2")
    result.assert_outcomes(passed=4)
    data = report(pytester)
    assert sorted(t["metrics"][0]["value"] for t in data["tests"]) == [60, 61, 62, 63]
    run_dir = next(pytester.path.glob("results/*"))
    assert all((run_dir / t["images"][0]["path"]).is_file() for t in data["tests"])


@pytest.mark.parametrize("spec,body", [
    ("reference:preset=tiny-schnell",  # the reference is its own oracle
     "assert target.name == 'reference' and reference is target\n"
     "    assert profile.name == 'cpu-tiny' and profile.get('size') == 256\n"),
    ("pipeline:preset=tiny-schnell",   # another target gets the reference on its weights
     "assert target.name == 'pipeline' and reference.name == 'reference'\n"
     "    assert reference.preset == target.preset == 'tiny-schnell'\n"),
], ids=["reference", "pipeline"])
def test_target_reference_and_profile_fixtures(pytester, suites, spec, body):
    suites({"suites/quality/test_f.py": f"def test_f(target, reference, profile):\n    {body}"})
    # targets load torch extensions, which cannot be unloaded between in-process runs: use a subprocess
    pytester.runpytest_subprocess(*PLUGINS, "--target", spec).assert_outcomes(passed=1)
    assert report(pytester)["target"]["model"] == "tiny-schnell"
