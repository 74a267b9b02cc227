"""-n N: pytest-xdist worker i on GPU i. On a machine without GPUs this is tested by what each worker is given:
its CUDA_VISIBLE_DEVICES, as the worker process itself reported it."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from harness import gpus, plugin
from runs import PLUGINS, captured, run_suites

SCHEMA = json.loads((Path(__file__).parents[1] / "reports" / "report.schema.json").read_text())


@pytest.mark.parametrize("variable,visible", [
    ("0,1", ["0", "1"]),
    ("GPU-5d1c0a2e-93f6-4b5e,GPU-0f9e7d44-2a61-8c3b", ["GPU-5d1c0a2e-93f6-4b5e", "GPU-0f9e7d44-2a61-8c3b"]),
    ("", []),  # none: CPU workers
])
def test_visible_gpus_are_the_entries_of_cuda_visible_devices(monkeypatch, variable, visible):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", variable)
    assert gpus.visible() == visible
    assert plugin.pytest_xdist_auto_num_workers(config=None) == (len(visible) or None)  # -n auto: one per GPU


def test_worker_i_gets_gpu_i_alone():
    assert gpus.assign(2, ["3", "GPU-5d1c"]) == ["3", "GPU-5d1c"]
    assert gpus.assign(1, ["3", "GPU-5d1c"]) == ["3"]
    assert gpus.assign(2, []) == [None, None]  # no GPU: CPU workers, unpinned
    with pytest.raises(ValueError, match=r"^-n 3: 3 workers but 2 GPUs visible \(CUDA_VISIBLE_DEVICES=0,1\): "
                                         r"one GPU per worker; use -n 2 or fewer$"):
        gpus.assign(3, ["0", "1"])


def test_more_workers_than_gpus_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    code, output, report = run_suites("-n", "2", out=tmp_path)
    assert code == 2 and report is None
    assert "run_tests.py: error: -n 2: 2 workers but 1 GPU visible (CUDA_VISIBLE_DEVICES=0)" in output
    # plain pytest with the plugin refuses it as well, before any worker starts
    monkeypatch.chdir(tmp_path)
    code, output = captured(pytest.main, [*PLUGINS, "-n", "2"])
    assert code == pytest.ExitCode.USAGE_ERROR and "-n 2: 2 workers but 1 GPU visible" in output


@pytest.mark.slow  # two workers, each a fresh interpreter
def test_each_worker_runs_with_its_own_gpu_and_the_report_says_so(pytester, monkeypatch):
    # worker i gets entry i, whatever the entries are; each test asserts what its worker process was given
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # only the plugins the run needs: workers start faster
    pytester.makepyfile(**{"suites/unit/test_w.py": "import os\n" + "".join(
        f"def test_{i}():\n    assert os.environ['CUDA_VISIBLE_DEVICES'] == "
        "{'gw0': '1', 'gw1': '0'}[os.environ['PYTEST_XDIST_WORKER']]\n" for i in range(2))})
    pytester.runpytest_subprocess("-p", "xdist", *PLUGINS, "-n", "2", "--run-id", "r").assert_outcomes(passed=2)
    run_dir = pytester.path / "results" / "r"
    report = json.loads((run_dir / "report.json").read_text())
    jsonschema.validate(report, SCHEMA)
    workers = report["environment"]["workers"]
    assert {w: seen["CUDA_VISIBLE_DEVICES"] for w, seen in workers.items()} == {"gw0": "1", "gw1": "0"}
    assert all(isinstance(seen["gpus"], list) for seen in workers.values())  # names torch saw there: none here
    assert sorted(t["worker"] for t in report["tests"]) == ["gw0", "gw1"]
    assert "gw0: CUDA_VISIBLE_DEVICES=1" in (run_dir / "report.html").read_text()
