"""The pytest plugin, run on small suites written for each test: inside pytester, or, for runs with real targets,
in a folder of the test's own (`here`) through pytest.main in this interpreter."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from runs import PLUGINS, captured



def inline(*args: str) -> tuple[int, str]:
    """pytest.main(ARGS) with the plugins, in this interpreter and the current folder. pytest's importlib mode
    gives each written file a module name of its own."""
    return captured(pytest.main, [*PLUGINS, "--import-mode=importlib", *args])


def report(folder: Path) -> dict:
    """The newest run's report.json."""
    path = max(folder.glob("results/*/report.json"), key=lambda p: p.stat().st_mtime_ns)
    return json.loads(path.read_text())


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    """An empty folder, made the current one, for a run with real targets: pytester drops the modules a test
    imported when it ends, and torch and its extensions cannot be imported twice in one process."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def suites():
    """suites/<category>/test_*.py files, and tests outside suites/, written in the current folder (pytester's
    or here's)."""
    def write(files: dict[str, str]):
        for name, body in files.items():
            path = Path(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
    return write


def test_markers_and_fixtures_are_documented(pytester):
    out = pytester.runpytest(*PLUGINS, "--markers").stdout.str()
    for marker in ("unit:", "integration:", "performance:", "quality:", "stress:", "edge_case:", "gpu:", "slow:",
                   "benchmark:"):
        assert f"@pytest.mark.{marker}" in out
    out = pytester.runpytest(*PLUGINS, "--fixtures").stdout.str()
    for fixture in ("target [session scope]", "reference [module scope]", "baseline_target [module scope]", "recorder",
                    "profile [session scope]"):
        assert fixture in out
    assert "fluxgate: the target under test" in pytester.runpytest(*PLUGINS, "--help").stdout.str()


def test_category_comes_from_the_folder_and_categories_run_in_order(pytester, suites):
    suites({f"suites/{folder}/test_{folder}.py": f"def test_{folder}(): pass\n"
            for folder in ("edge_cases", "integration", "performance", "quality", "stress", "unit")}
           | {"other/test_o.py": "def test_o(): pass\n"})
    pytester.runpytest(*PLUGINS, "-m", "performance").assert_outcomes(passed=1, deselected=6)
    pytester.runpytest(*PLUGINS, "-m", "edge_case or performance").assert_outcomes(passed=2, deselected=5)
    # the suites ran in the README's order, not the folders' (edge_cases first would warm a server before the
    # performance suite takes its cold start), and the test outside suites/ after them, reported as well
    pytester.runpytest(*PLUGINS).assert_outcomes(passed=7)
    assert [t["category"] for t in report(pytester.path)["tests"]] == \
        ["unit", "integration", "performance", "quality", "stress", "edge_case", None]
    assert list(report(pytester.path)["categories"])[-1] == "other"


def test_a_file_that_does_not_collect_fails_the_run(pytester, suites):
    suites({"suites/unit/test_u.py": "def test_u(): pass\n", "other/test_broken.py": "import no_such_module\n"})
    # pytest stops before any test: nothing is reported, and nothing says PASS
    result = pytester.runpytest(*PLUGINS)
    assert result.ret == pytest.ExitCode.INTERRUPTED and "fluxgate:" not in result.stdout.str()
    # told to go on, the tests run, and the file that did not collect is an error of the run, as pytest counts it
    result = pytester.runpytest(*PLUGINS, "--continue-on-collection-errors")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*fluxgate: FAIL*"])
    data = report(pytester.path)
    assert data["run"]["verdict"] == "fail" and data["categories"]["other"]["fail"] == 1
    broken = data["tests"][-1]
    assert (broken["nodeid"], broken["category"], broken["outcome"]) == ("other/test_broken.py", None, "error")
    assert "No module named 'no_such_module'" in broken["message"]


def test_gpu_and_slow_tests_skip_with_reasons(pytester, suites):
    suites({"suites/unit/test_marks.py": "import pytest\n"
            "@pytest.mark.gpu\ndef test_gpu(): pass\n"
            "@pytest.mark.slow\ndef test_slow(): pass\n"
            "def test_plain(): pass\n"})
    pytester.runpytest(*PLUGINS, "--skip-slow", "--skip-gpu").assert_outcomes(passed=1, skipped=2)
    reasons = {t["nodeid"].split("::")[1]: t["skip_reason"] for t in report(pytester.path)["tests"]}
    assert reasons["test_gpu"] in ("needs a CUDA device", "--skip-gpu")  # the first where there is no CUDA
    assert reasons["test_slow"] == "--skip-slow" and reasons["test_plain"] is None


def test_a_metric_over_its_threshold_fails_the_test(pytester, suites):
    suites({"suites/performance/test_m.py":
            "def test_slow(recorder):\n    recorder.metric('latency.p50', 7.5, 's', better='lower')\n"
            "def test_fast(recorder):\n    recorder.metric('latency.p50', 0.5, 's', better='lower')\n"})
    result = pytester.runpytest(*PLUGINS)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*fluxgate: FAIL*", "gate failed: latency.p50 = 7.5s is above the maximum 2 *test_slow*"])
    tests = {t["nodeid"].split("::")[1]: t for t in report(pytester.path)["tests"]}
    assert tests["test_slow"]["verdict"] == "fail" and tests["test_slow"]["metrics"][0]["threshold"] == {"max": 2.0}
    assert tests["test_fast"]["verdict"] == "pass"


@pytest.mark.slow
def test_recordings_travel_from_xdist_workers(pytester, suites, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # CPU workers: -n 2 on a machine with one GPU would be refused
    suites({f"suites/quality/test_{i}.py":
            "import numpy as np\n"
            f"def test_{i}(recorder):\n"
            f"    recorder.metric('psnr', {60 + i}, 'dB', better='higher')\n"
            f"    recorder.image('img', np.full((8, 8, 3), {i}, np.uint8))\n" for i in range(4)})
    result = pytester.runpytest_subprocess(*PLUGINS, "-n", "2")
    result.assert_outcomes(passed=4)
    data = report(pytester.path)
    assert sorted(t["metrics"][0]["value"] for t in data["tests"]) == [60, 61, 62, 63]
    assert data["environment"]["workers"] == {w: {"CUDA_VISIBLE_DEVICES": "", "gpus": []} for w in ("gw0", "gw1")}
    run_dir = next(pytester.path.glob("results/*"))
    assert all((run_dir / t["images"][0]["path"]).is_file() for t in data["tests"])


@pytest.mark.slow  # a child process with a model
def test_the_oracle_is_golden_images_rendered_in_another_process(here, suites):
    suites({"suites/quality/test_f.py":
            "import gc\n"
            "from targets.reference import ReferenceTarget\n"
            "def test_f(target, reference, profile):\n"
            "    assert target.name == 'pipeline' and profile.name == 'cpu-tiny' and profile.get('size') == 256\n"
            "    spec = reference.describe()['spec']\n"
            "    assert 'preset=tiny-schnell' in spec\n"
            "    image = reference.generate(profile.request(height=64, width=64, num_inference_steps=1))\n"
            "    assert image.images.shape == (1, 64, 64, 3) and image.info['golden'] == 'rendered'\n"
            "    loaded = [o for o in gc.get_objects() if isinstance(o, ReferenceTarget) and o.spec == spec]\n"
            "    assert not loaded, 'the oracle has weights in the process of the target'\n"})
    code, output = inline("--target", "pipeline:preset=tiny-schnell", "--golden", str(here / "golden"))
    assert code == 0, output[-3000:]
    assert report(here)["target"]["model"] == "tiny-schnell"
    assert list((here / "golden").glob("*.png"))


def test_no_target_is_compared_with_itself(here, suites):
    suites({"suites/integration/test_f.py": "def test_f(reference):\n    pass\n"})
    code, output = inline("--target", "reference:preset=tiny-schnell")
    assert code == 0, output[-3000:]
    (test,) = report(here)["tests"]
    assert test["outcome"] == "skipped" and "the target is the reference oracle itself" in test["skip_reason"]


REMOTE = '''
import numpy as np
from harness.target import Capabilities, Target
from harness.types import GenerationResult

SEEN = []


class Remote(Target):
    """A server elsewhere, as the plugin sees one: it only answers, and remembers the order it was asked in."""
    name = "remote"
    capabilities = Capabilities(remote=True)

    def generate(self, request):
        SEEN.append(request)
        if self.first_call is None:
            self.first_call = (request, 1.0)
        return GenerationResult(np.zeros((1, request.height, request.width, 3), np.uint8))
'''


def test_a_remote_targets_first_request_is_the_plain_one_whatever_runs_first(pytester, suites):
    suites({"fakes/__init__.py": "", "fakes/remote.py": REMOTE,
            "suites/edge_cases/test_e.py": "from harness.types import GenerationRequest\n"
            "def test_e(target):\n    target.generate(GenerationRequest('an edge case', 16, 16, 1))\n",
            "suites/performance/test_p.py": "from fakes.remote import SEEN\n"
            "def test_p(target, profile):\n"
            "    assert SEEN[0] == profile.request() and target.first_call[0] == profile.request()\n"})
    pytester.syspathinsert()
    # the edge case alone, then both: either way the session's first request is the plain one
    pytester.runpytest(*PLUGINS, "--target", "fakes.remote:Remote", "-k", "test_e").assert_outcomes(passed=1)
    pytester.runpytest(*PLUGINS, "--target", "fakes.remote:Remote").assert_outcomes(passed=2)


@pytest.mark.slow  # a child process with a model
def test_the_baseline_target_runs_in_a_process_of_its_own(here, suites):
    suites({"suites/performance/test_b.py": "import os\n"
            "def test_b(baseline_target):\n"
            "    assert baseline_target.pid not in (None, os.getpid()) and baseline_target.describe()['isolated']\n"
            "    assert baseline_target.name == 'reference'\n"})
    code, output = inline("--baseline-target", "reference:preset=tiny-schnell")
    assert code == 0 and report(here)["tests"][0]["outcome"] == "passed", output[-3000:]
