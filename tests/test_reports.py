"""The three report files: report.json against its schema, report.html for a reviewer, junit.xml for CI."""
from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest

SCHEMA = json.loads((Path(__file__).parents[1] / "reports" / "report.schema.json").read_text())
PLUGINS = ["-p", "harness.plugin", "-p", "reports.plugin", "-p", "no:cacheprovider"]
SUITE = '''
import numpy as np
import pytest

def test_pass(recorder):
    recorder.metric("psnr", 72.5, "dB", better="higher")
    recorder.image("grey", np.full((16, 16, 3), 128, np.uint8))
    recorder.artifact("timings", {"encode": 0.1})
    recorder.note("threads share one pipeline")

def test_gate(recorder):
    recorder.metric("latency.p50", 9.0, "s", better="lower")

def test_broken():
    raise RuntimeError("<script>alert('x')</script>")

@pytest.mark.gpu
def test_gpu():
    pass
'''


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """One run of a small suite with a pass, a gate failure, an error and a skip."""
    folder = tmp_path_factory.mktemp("reports")
    (folder / "suites" / "quality").mkdir(parents=True)
    (folder / "suites" / "quality" / "test_q.py").write_text(SUITE)
    subprocess.run([sys.executable, "-m", "pytest", *PLUGINS, "--run-id", "r1", "--skip-gpu"], cwd=folder,
                   capture_output=True, check=False)
    return folder / "results" / "r1"


def test_json_follows_its_schema(run_dir):
    report = json.loads((run_dir / "report.json").read_text())
    jsonschema.validate(report, SCHEMA)
    assert report["run"]["status"] == "complete" and report["run"]["verdict"] == "fail"
    assert report["categories"] == {"quality": {"pass": 1, "fail": 2, "skip": 1, "verdict": "fail"}}
    tests = {t["nodeid"].split("::")[1]: t for t in report["tests"]}
    assert tests["test_broken"]["outcome"] == "failed" and "RuntimeError" in tests["test_broken"]["message"]
    assert "latency.p50 = 9s is above the maximum 2" in tests["test_gate"]["message"]
    assert tests["test_gpu"]["skip_reason"] in ("needs a CUDA device", "--skip-gpu")
    assert (run_dir / tests["test_pass"]["images"][0]["path"]).is_file()
    assert json.loads((run_dir / tests["test_pass"]["artifacts"][0]["path"]).read_text()) == {"encode": 0.1}
    assert report["environment"]["cpu_count"] >= 1 and report["environment"]["libraries"]["torch"]
    profile = report["profile"]
    assert profile["name"] == "cpu-tiny" and 'name = "cpu-tiny"' in profile["content"] and len(profile["sha256"]) == 64
    # cpu-tiny gates far more than this suite records: each threshold that could not fire is named
    assert "quality.ssim.min" in profile["unmatched"] and "latency.p50" not in profile["unmatched"]
    assert "equivalence.ssim" not in profile["unmatched"]  # the integration suite did not run


def test_schema_rejects_what_it_should():
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"schema_version": "2.0"}, SCHEMA)


def test_html_puts_the_verdict_first_and_stands_alone(run_dir):
    html = (run_dir / "report.html").read_text()
    assert html.index("FAIL") < html.index("quality") < html.index("Environment")
    assert "latency.p50 = 9s is above the maximum 2" in html           # failed gates, with reasons
    assert "&le; 2" in html and "72.5" in html                          # metrics against thresholds
    assert "data:image/png;base64," in html and 'src="artifacts' not in html  # images inline
    assert "<script>alert" not in html and "&lt;script&gt;" in html     # autoescaped
    assert "threads share one pipeline" in html
    assert "Thresholds that gated nothing" in html and "quality.ssim.min" in html


def test_junit_counts_and_properties(run_dir):
    suite = ET.parse(run_dir / "junit.xml").getroot()
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("4", "2", "1")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert "regressed" not in cases["test_gate"].find("failure").get("message")
    assert "above the maximum" in cases["test_gate"].find("failure").get("message")
    assert cases["test_pass"].find("properties/property").get("value") == "72.5dB"
    assert cases["test_gpu"].find("skipped") is not None
