"""Profiles and baselines turn metrics into verdicts; each gate is shown failing where it should."""
from __future__ import annotations

import json

import pytest

from harness.gates import Baseline, Profile, judge
from harness.record import Metric, Run, TestRecord


def profile(tmp_path, text: str) -> Profile:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return Profile.load(str(path))


def test_shipped_profiles_load():
    cpu, gpu = Profile.load("cpu-tiny"), Profile.load("flux-dev-h100")
    assert cpu.threshold("latency.p50") == {"max": 2.0} and cpu.get("size") == 256
    assert gpu.threshold("latency.p50") == {"max": 30.0} and gpu.threshold("quality.ssim.min") == {"min": 0.95}


def test_thresholds_fail_outside_their_bounds(tmp_path):
    p = profile(tmp_path, '[thresholds]\n"latency.p50" = { max = 2.0 }\n"psnr" = { min = 40 }\n')
    assert judge(Metric("latency.p50", 1.9, "s", "lower"), "t", p, None).verdict == "pass"
    slow = judge(Metric("latency.p50", 2.1, "s", "lower"), "t", p, None)
    assert slow.verdict == "fail" and "above the maximum 2" in slow.reasons[0]
    assert judge(Metric("psnr", 39.0, "dB"), "t", p, None).verdict == "fail"
    assert judge(Metric("psnr", float("nan"), "dB"), "t", p, None).verdict == "fail"  # NaN passes no gate
    assert judge(Metric("other", 1e9), "t", p, None).verdict == "none"


def test_globs_and_per_metric_tolerance(tmp_path):
    p = profile(tmp_path, '[thresholds]\n"latency.*" = { max = 1 }\n[tolerances]\n"latency.*" = 0.5\n')
    assert p.threshold("latency.p99") == {"max": 1} and p.tolerance_for("latency.p99") == 0.5
    assert p.tolerance_for("psnr") == 0.10


@pytest.mark.parametrize("text,message", [
    ('[thresholds]\n"x" = 3\n', "give min and/or max"),
    ('[thresholds]\n"x" = { below = 3 }\n', "give min and/or max"),
    ('[thresholds\n', "not valid TOML"),
])
def test_bad_profiles_are_named(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        profile(tmp_path, text)


def write_baseline(tmp_path, metrics: dict[str, float], version: str = "1.0"):
    run = Run(id="base", dir=tmp_path, target_spec="reference", profile="cpu-tiny")
    run.tests["t"] = TestRecord("t", "performance", metrics=[Metric(k, v) for k, v in metrics.items()])
    data = run.to_dict() | {"schema_version": version}
    (tmp_path / "report.json").write_text(json.dumps(data))
    return tmp_path / "report.json"


def test_baseline_regressions_fail_in_the_worse_direction_only(tmp_path):
    p = profile(tmp_path, "[baseline]\ntolerance = 0.10\n")
    base = Baseline(write_baseline(tmp_path, {"latency.p50": 1.0, "psnr": 40.0}))
    assert judge(Metric("latency.p50", 1.09, "s", "lower"), "t", p, base).verdict == "pass"
    slower = judge(Metric("latency.p50", 1.11, "s", "lower"), "t", p, base)
    assert slower.verdict == "fail" and slower.baseline == 1.0 and "regressed" in slower.reasons[0]
    assert judge(Metric("latency.p50", 0.2, "s", "lower"), "t", p, base).verdict == "pass"  # faster is fine
    assert judge(Metric("psnr", 35.0, "dB", "higher"), "t", p, base).verdict == "fail"
    assert judge(Metric("psnr", 35.0, "dB", "higher"), "other-test", p, base).verdict == "none"
    assert judge(Metric("psnr", 35.0, "dB", None), "t", p, base).verdict == "none"  # informational


def test_baseline_of_another_schema_is_refused(tmp_path):
    with pytest.raises(ValueError, match="schema_version 2.0"):
        Baseline(write_baseline(tmp_path, {}, version="2.0"))


def test_verdicts_roll_up_to_the_run(tmp_path):
    run = Run(id="r", dir=tmp_path, target_spec="reference", profile="cpu-tiny", status="complete")
    run.tests["a"] = TestRecord("a", "unit")
    run.tests["b"] = TestRecord("b", "performance", metrics=[Metric("latency.p50", 3, verdict="fail")])
    run.tests["c"] = TestRecord("c", "quality", outcome="skipped")
    cats = run.categories()
    assert cats["unit"]["verdict"] == "pass" and cats["performance"]["verdict"] == "fail"
    assert cats["quality"]["verdict"] == "skip" and run.verdict == "fail"
    del run.tests["b"]
    assert run.verdict == "pass"
    run.status = "interrupted"
    assert run.verdict == "error"
