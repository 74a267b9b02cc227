"""The three report files: report.json against its schema, report.html for a reviewer, junit.xml for CI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from browser import inspect
from runs import PLUGINS

SCHEMA = json.loads((Path(__file__).parents[1] / "reports" / "report.schema.json").read_text())
SUITE = '''
import json, os
import numpy as np
import pytest

HOSTILE = json.loads(open(os.environ["EDGE_PROMPTS"]).read())

def test_pass(recorder):
    recorder.metric("psnr", 72.5, "dB", better="higher")
    recorder.image("grey", np.full((16, 16, 3), 128, np.uint8), caption=HOSTILE["html"])
    recorder.artifact("timings", {"encode": 0.1})
    recorder.note("threads share one pipeline")
    recorder.note(HOSTILE["js"])

def test_gallery(recorder):
    rng = np.random.default_rng(0)
    ours = rng.integers(0, 250, (32, 32, 3), dtype=np.uint8)
    theirs = ours.copy()
    theirs[8:12, 8:12] += 3   # a patch 3 levels off: the heat-map shows it, amplified
    for name, prompt in HOSTILE.items():
        if not name.startswith("_"):
            recorder.comparison(name, ours, theirs, prompt, {"psnr": 60.0})
    recorder.comparison("same", ours, ours, None)

def test_latency(recorder):
    samples = [0.1, 0.12, 0.11, 0.13, 0.1]
    recorder.percentiles("latency", samples)
    recorder.artifact("latency-samples", samples)

def test_gate(recorder):
    recorder.metric("latency.p50", 9.0, "s", better="lower")

def test_broken():
    raise RuntimeError("<script>alert('x')</script>")

@pytest.mark.gpu
def test_gpu():
    pass
'''
EDGE_PROMPTS = Path(__file__).parents[1] / "harness" / "data" / "edge_prompts.json"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """One run of a small suite with a pass, a gate failure, an error and a skip."""
    folder = tmp_path_factory.mktemp("reports")
    (folder / "suites" / "quality").mkdir(parents=True)
    (folder / "suites" / "quality" / "test_q.py").write_text(SUITE)
    subprocess.run([sys.executable, "-m", "pytest", *PLUGINS, "--run-id", "r1", "--skip-gpu"], cwd=folder,
                   capture_output=True, check=False, env={**os.environ, "EDGE_PROMPTS": str(EDGE_PROMPTS)})
    return folder / "results" / "r1"


def test_json_follows_its_schema(run_dir):
    report = json.loads((run_dir / "report.json").read_text())
    jsonschema.validate(report, SCHEMA)
    assert report["run"]["status"] == "complete" and report["run"]["verdict"] == "fail"
    assert report["categories"] == {"quality": {"pass": 3, "fail": 2, "skip": 1, "verdict": "fail"}}
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


def test_comparisons_keep_the_three_images_and_amplify_the_difference(run_dir):
    report = json.loads((run_dir / "report.json").read_text())
    (test,) = [t for t in report["tests"] if t["nodeid"].endswith("test_gallery")]
    by_name = {c["name"]: c for c in test["comparisons"]}
    html = by_name["html"]
    assert html["prompt"] == "<img src=x onerror=alert(1)><b>bold</b>" and html["metrics"] == {"psnr": 60.0}
    assert (html["max_diff"], html["gain"]) == (3, 85.0)
    from PIL import Image

    heat = np.asarray(Image.open(run_dir / html["difference"]))
    assert heat[:8].max() == 0 and heat[8:12, 8:12, :2].min() > 200  # black where equal, pale yellow where most
    same = by_name["same"]
    assert same["max_diff"] == 0 and np.asarray(Image.open(run_dir / same["difference"])).max() == 0


def test_html_puts_the_verdict_first_and_stands_alone(run_dir):
    html = (run_dir / "report.html").read_text()
    order = ['id="verdict"', "What failed", 'id="charts"', 'id="galleries"', 'id="quality"', "Environment"]
    assert [html.index(part) for part in order] == sorted(html.index(part) for part in order)
    assert "latency.p50 = 9s is above the maximum 2" in html           # what failed, with why
    assert 'href="#t-suites_quality_test_q.py_test_broken"' in html     # ... linking to the test
    assert 'id="t-suites_quality_test_q.py_test_broken"' in html
    assert "&le; 2" in html and "72.5" in html                          # metrics against thresholds
    assert html.count("data:image/svg+xml;base64,") == 1                # the latency chart
    assert "warm latency, 5 requests" in html
    assert "data:image/png;base64," in html and 'src="artifacts' not in html and "url(artifacts" not in html
    assert '<meta http-equiv="Content-Security-Policy" content="default-src &#39;none&#39;; img-src data:;' in html
    assert "threads share one pipeline" in html
    assert "Thresholds that gated nothing" in html and "quality.ssim.min" in html
    for raw in ("<script>alert", "<img src=x", "\"); alert('x')"):      # every string escaped
        assert raw not in html
    assert "&lt;script&gt;" in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_equal_images_are_inlined_once(run_dir):
    html = (run_dir / "report.html").read_text()
    report = json.loads((run_dir / "report.json").read_text())
    (test,) = [t for t in report["tests"] if t["nodeid"].endswith("test_gallery")]
    # 15 comparisons of the same pair: one target, one reference, one heat-map, and the "same" pair's black one
    assert len(test["comparisons"]) == 15 and html.count("background-image: url(") == 4 + 1  # + the grey image


def test_the_html_is_drawn_again_from_report_json(run_dir, tmp_path):
    import shutil

    from reports.html import main

    copy = shutil.copytree(run_dir, tmp_path / "copy")
    (copy / "report.html").unlink()
    assert main([str(copy)]) == 0
    assert (copy / "report.html").read_text() == (run_dir / "report.html").read_text()
    assert main([str(tmp_path / "nowhere")]) == 2
    # an artifact in a shape an older fluxgate wrote costs its chart, not the report
    next(copy.glob("artifacts/*test_latency/latency-samples.json")).write_text('{"older": "shape"}')
    assert main([str(copy)]) == 0 and "warm latency" not in (copy / "report.html").read_text()


def test_a_report_of_hostile_strings_runs_nothing_and_loads_nothing(run_dir, browser, screenshots):
    found = inspect(browser, run_dir / "report.html", screenshots / "report-hostile.png")
    assert found.clean, found
    assert found.images == 6 and found.verdict_top is not None and found.verdict_top < 100
    assert found.zoomed[1] > 2 * found.zoomed[0], "a click did not enlarge the image"
    # were escaping ever to fail, the page's content-security policy would still run no script and load nothing
    planted = run_dir.parent / "planted.html"
    planted.write_text((run_dir / "report.html").read_text().replace(
        "<body>", '<body><script>alert("ran")</script><img src=x onerror="alert(2)">'
                  '<img src="http://127.0.0.1:9/x.png">'))
    found = inspect(browser, planted, screenshots / "report-planted.png")
    assert found.dialogs == [] and found.requests == [] and len(set(found.blocked)) == 2
    assert all("Content Security Policy" in message for message in found.console)


def test_the_browser_check_fails_a_page_that_misbehaves(browser, tmp_path, screenshots):
    page = tmp_path / "bad.html"
    page.write_text('<img src=x onerror="alert(1)"><script>console.error("boom")</script>'
                    '<img src="http://127.0.0.1:9/elsewhere.png"><img src="data:image/png;base64,AAAA">')
    found = inspect(browser, page, screenshots / "misbehaving.png")
    assert found.dialogs == ["1"] and "boom" in found.console
    assert any("elsewhere.png" in url for url in found.requests) and len(found.broken) == 3  # x, elsewhere, AAAA
    assert found.verdict_top is None and not found.clean


def test_junit_counts_and_properties(run_dir):
    suite = ET.parse(run_dir / "junit.xml").getroot()
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("6", "2", "1")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert "regressed" not in cases["test_gate"].find("failure").get("message")
    assert "above the maximum" in cases["test_gate"].find("failure").get("message")
    assert cases["test_pass"].find("properties/property").get("value") == "72.5dB"
    assert cases["test_gpu"].find("skipped") is not None


@pytest.mark.slow
def test_the_default_report_shows_the_verdict_charts_and_galleries_in_a_browser(default_run, browser, screenshots):
    _, _, report, run_dir = default_run
    found = inspect(browser, run_dir / "report.html", screenshots / "report-default.png")
    assert found.clean, found  # among its images: every edge-case prompt (HTML, JS, control characters) as text
    assert found.verdict_top is not None and found.verdict_top < 100
    html = (run_dir / "report.html").read_text()
    for title in ("warm latency", "latency against resolution", "latency against steps", "latency against batch",
                  "concurrency ramp", "open loop at", "highest sustained rate", "memory under sustained load"):
        assert f"<b>{title}" in html, title
    comparisons = sum(len(t["comparisons"]) for t in report["tests"])
    assert comparisons == 1 + 4 and html.count('class="comparison"') == comparisons  # equivalence; 4 prompts
    assert (run_dir / "report.html").stat().st_size < 4 * 2**20  # small enough to attach to a CI run


def test_odd_values_and_names_cost_no_report(run_dir):
    """A NaN metric with a baseline, a test id with TeX's $...$ in it, an unfinished run: still a page, and one
    that does not say everything passed."""
    from reports.html import render

    report = json.loads((run_dir / "report.json").read_text())
    test = next(t for t in report["tests"] if t["nodeid"].endswith("test_latency"))
    test["nodeid"] += "[$^$ price]"
    for m in test["metrics"]:
        m["baseline"] = m["value"] * 2
    test["metrics"][0]["value"] = float("nan")
    html = render(report, run_dir)
    assert "against the baseline: 2 metrics" in html and "warm latency" in html  # the NaN one has no bar
    report["run"].update(status="interrupted", verdict="error")
    report["tests"] = [t for t in report["tests"] if t["verdict"] != "fail"]
    html = render(report, run_dir)
    assert "This run did not finish (interrupted)" in html and "Every test and gate passed" not in html


def test_a_downscaled_heat_map_keeps_a_single_differing_pixel(tmp_path):
    from PIL import Image

    from harness.record import heat_map
    from reports.html import encode

    levels = np.zeros((1024, 1024))
    levels[517, 301] = 255
    Image.fromarray(heat_map(levels)).save(tmp_path / "difference.png")

    def brightest(uri: str) -> int:
        import base64
        import io

        return int(np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",")[1])))).max())

    assert brightest(encode(tmp_path / "difference.png", keep_peaks=True)) > 250
    assert brightest(encode(tmp_path / "difference.png")) < 100  # what an image's smoothing does to it
