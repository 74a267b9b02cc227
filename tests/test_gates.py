"""Profiles and baselines turn metrics into verdicts; each gate is shown failing where it should."""
from __future__ import annotations

import json

import pytest

from harness.gates import Baseline, Profile, judge
from harness.metrics import catalogue
from harness.record import Metric, Run, TestRecord


def profile(tmp_path, text: str) -> Profile:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return Profile.load(str(path))


def test_shipped_profiles_load_and_name_only_known_metrics():
    cpu, gpu = Profile.load("cpu-tiny"), Profile.load("flux-dev-h100")
    assert cpu.threshold("latency.p50") == {"max": 2.0} and cpu.get("size") == 256
    assert gpu.threshold("latency.p50") == {"max": 30.0} and gpu.threshold("quality.ssim.min") == {"min": 0.95}
    for p in (cpu, gpu):
        assert all(catalogue.known(name) for name in p.thresholds)
    with pytest.raises(KeyError, match="'sizes'"):
        cpu.get("sizes")  # a suite that asks for a setting nobody defined fails at once


def test_thresholds_fail_outside_their_bounds(tmp_path):
    p = profile(tmp_path, '[thresholds]\n"latency.p50" = { max = 2.0 }\n"equivalence.psnr" = { min = 40 }\n')
    assert judge(Metric("latency.p50", 1.9, "s", "lower"), "t", p, None).verdict == "pass"
    slow = judge(Metric("latency.p50", 2.1, "s", "lower"), "t", p, None)
    assert slow.verdict == "fail" and "above the maximum 2" in slow.reasons[0]
    assert judge(Metric("equivalence.psnr", 39.0, "dB"), "t", p, None).verdict == "fail"
    assert judge(Metric("equivalence.psnr", float("nan"), "dB"), "t", p, None).verdict == "fail"  # NaN passes no gate
    assert judge(Metric("success_rate", 0.1), "t", p, None).verdict == "none"


def test_globs_are_anchored_and_the_most_specific_wins(tmp_path):
    p = profile(tmp_path, '[thresholds]\n"latency.*" = { max = 1 }\n"*latency.p99" = { max = 5 }\n'
                          '"latency.p99" = { max = 9 }\n"ramp.c*.throughput" = { min = 1 }\n'
                          '[tolerances]\n"latency.*" = 0.5\n"*.p95" = { relative = 0.2, absolute = 0.01 }\n')
    assert p.threshold("latency.p50") == {"max": 1}                # the glob
    assert p.threshold("latency.p99") == {"max": 9}                # an exact name beats every glob
    assert p.threshold("open_loop.latency.p99") == {"max": 5}      # "latency.*" does not reach inside a name
    assert p.threshold("open_loop.latency.p50") == {}
    assert p.threshold("ramp.c16.throughput") == {"min": 1}         # * spans any characters, dots too
    assert p.tolerance_for("latency.p50").relative == 0.5 and p.tolerance_for("equivalence.psnr").relative == 0.10
    # "latency.*" (9 characters) and "*.p95" (5) both match latency.p95: the longer one wins
    assert p.tolerance_for("latency.p95").relative == 0.5
    assert p.tolerance_for("open_loop.latency.p95").relative == 0.2
    assert p.tolerance_for("open_loop.latency.p95").absolute == 0.01


@pytest.mark.parametrize("text,message", [
    ('[thresholds]\n"equivalence.psnr" = 3\n', "threshold 'equivalence.psnr' = 3: give a table (min, max, optional)"),
    ('[thresholds]\n"equivalence.psnr" = { optional = true }\n', "give min and/or max"),
    ('[thresholds]\n"equivalence.psnr" = { below = 3 }\n', "field 'below' is not one fluxgate knows"),
    ('[thresholds]\n"equivalence.psnr" = { min = "30" }\n', "min = '30' must be int or float"),
    ('[tolerances]\n"latency.*" = "half"\n', "tolerance 'latency.*' = 'half': give a table"),
    ('[baseline]\ntolerance = "10%"\n', "tolerance = '10%' must be int or float"),
    ('[metrics]\n"my.score" = { beter = "higher" }\n', "field 'beter' is not one fluxgate knows; did you mean 'better'"),
    ('[metrics]\n"my.score" = 3\n', "[metrics] 'my.score' = 3: give a table"),
    ('[settings]\nscaling_steps = ["a"]\n', "scaling_steps = ['a']: must be list"),
    ('name = 3\n', "name = 3 must be a string"),
    ('[thresholds\n', "not valid TOML"),
    ('[settings]\nlatncy_runs = 5\n', "[settings] 'latncy_runs' is not one fluxgate knows; did you mean 'latency_runs'"),
    ('[settings]\nsize = "256"\n', "size = '256': must be int"),
    ('[settings]\nopen_poisson = 1\n', "open_poisson = 1: must be bool"),
    ('[thresholds]\n"equivalence.psnrr" = { min = 30 }\n', "did you mean 'equivalence.psnr'"),
    ('[thresholds]\n"throughput.api" = { min = 10 }\n', "'throughput.api' matches no metric fluxgate records"),
    ('[tolerances]\n"latncy.*" = 0.5\n', "[tolerances] 'latncy.*' is not one fluxgate knows"),
    ('[threshold]\n"latency.p50" = { max = 1 }\n', "section 'threshold' is not one fluxgate knows; did you mean 'thresholds'"),
    ('[baseline]\ntolerence = 0.1\n', "[baseline]: field 'tolerence' is not one fluxgate knows; did you mean 'tolerance'"),
])
def test_bad_profiles_are_named(tmp_path, text, message):
    with pytest.raises(ValueError) as refused:
        profile(tmp_path, text)
    assert message in str(refused.value)


def test_a_profile_declares_the_metrics_of_its_own_suites(tmp_path):
    p = profile(tmp_path, '[metrics]\n"my.score" = { unit = "pt", better = "higher" }\n'
                          '[thresholds]\n"my.score" = { min = 3 }\n')
    assert judge(Metric("my.score", 2.0, "pt", "higher"), "t", p, None).verdict == "fail"


def test_thresholds_that_gate_nothing_are_listed_unless_optional(tmp_path):
    p = profile(tmp_path, '[thresholds]\n"latency.*" = { max = 1 }\n"speedup" = { min = 2, optional = true }\n'
                          '"throughput" = { min = 1 }\n')
    assert p.unmatched({"latency.p50", "success_rate"}, {"performance", "integration"}) == ["throughput"]
    assert p.unmatched({"throughput"}, {"performance"}) == ["latency.*"]
    assert p.unmatched(set(), {"stress"}) == []  # what a run of other categories cannot record is no news
    assert p.threshold("speedup") == {"min": 2}  # optional is about being recorded, not about the bound


def test_the_report_keeps_the_profile_whole():
    p = Profile.load("cpu-tiny")
    d = p.describe()
    assert d["content"] == p.text and 'name = "cpu-tiny"' in d["content"]
    assert len(d["sha256"]) == 64 and d["settings"]["latency_runs"] == p.get("latency_runs")


def test_a_profile_extends_another_with_what_it_names(tmp_path):
    cpu = Profile.load("cpu-tiny")
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "quick.toml").write_text('extends = "cpu-tiny"\n[settings]\nsize = 64\n'
                                                    '[thresholds]\n"latency.p50" = { max = 0.5 }\n')
    mine = profile(tmp_path, 'name = "mine"\nextends = "base/quick.toml"\n[settings]\nsteps = 2\n'
                             '[tolerances]\n"latency.*" = 0.9\n')
    assert (mine.name, mine.get("size"), mine.get("steps")) == ("mine", 64, 2)   # each its own setting
    assert mine.get("latency_runs") == cpu.get("latency_runs")                     # and the rest from the base
    assert mine.threshold("latency.p50") == {"max": 0.5} and mine.threshold("equivalence.psnr") == {"min": 60}
    assert mine.tolerance_for("latency.p50").relative == 0.9
    assert mine.tolerance_for("throughput").relative == cpu.tolerance_for("throughput").relative
    assert "steps = 2" in mine.text and "size = 64" in mine.text and cpu.text in mine.text  # what gated it, whole
    with pytest.raises(ValueError, match="extends itself"):
        profile(tmp_path, 'extends = "p.toml"\n')
    with pytest.raises(ValueError, match="profile 'nope': no such profile"):
        profile(tmp_path, 'extends = "nope"\n')
    with pytest.raises(ValueError, match="extends = 3 must be a string"):
        profile(tmp_path, 'extends = 3\n')
    with pytest.raises(ValueError, match="'sise' is not one fluxgate knows; did you mean 'size'"):
        profile(tmp_path, 'extends = "cpu-tiny"\n[settings]\nsise = 64\n')


def test_a_percentile_without_the_samples_it_needs_is_reported_not_gated(tmp_path):
    p = profile(tmp_path, '[thresholds]\n"latency.p99" = { max = 1 }\n"latency.p50" = { max = 1 }\n')
    thin = judge(Metric("latency.p99", 3.0, "s", "lower", n=5, min_n=299), "t", p, None)
    assert thin.verdict == "none" and "5 samples" in thin.note and "299" in thin.note
    enough = judge(Metric("latency.p99", 3.0, "s", "lower", n=300, min_n=299), "t", p, None)
    assert enough.verdict == "fail"
    assert judge(Metric("latency.p50", 3.0, "s", "lower", n=5, min_n=5), "t", p, None).verdict == "fail"


def write_baseline(tmp_path, metrics: dict[str, float], version: str = "2.0", spec: str = "reference",
                   profile_: Profile | None = None, environment: dict | None = None):
    run = Run(id="base", dir=tmp_path, target_spec=spec, profile=(profile_ or Profile.load("cpu-tiny")).describe())
    run.environment = environment or {"cpu": "x86", "cpu_count": 2, "gpus": []}
    run.tests["t"] = TestRecord("t", "performance", metrics=[Metric(k, v) for k, v in metrics.items()])
    data = run.to_dict() | {"schema_version": version}
    (tmp_path / "report.json").write_text(json.dumps(data))
    return tmp_path / "report.json"


def test_baseline_regressions_fail_in_the_worse_direction_only(tmp_path):
    p = profile(tmp_path, "[baseline]\ntolerance = 0.10\n[tolerances]\n\"latency.p50\" = { relative = 0.1, absolute = 0 }\n")
    base = Baseline(write_baseline(tmp_path, {"latency.p50": 1.0, "equivalence.psnr": 40.0}))
    assert judge(Metric("latency.p50", 1.09, "s", "lower"), "t", p, base).verdict == "pass"
    slower = judge(Metric("latency.p50", 1.11, "s", "lower"), "t", p, base)
    assert slower.verdict == "fail" and slower.baseline == 1.0 and "regressed" in slower.reasons[0]
    assert judge(Metric("latency.p50", 0.2, "s", "lower"), "t", p, base).verdict == "pass"  # faster is fine
    assert judge(Metric("equivalence.psnr", 35.0, "dB", "higher"), "t", p, base).verdict == "fail"
    assert judge(Metric("equivalence.psnr", 35.0, "dB", "higher"), "other-test", p, base).verdict == "none"
    assert judge(Metric("equivalence.psnr", 35.0, "dB", None), "t", p, base).verdict == "none"  # informational


def test_tolerance_is_absolute_plus_relative_so_a_zero_baseline_can_move(tmp_path):
    # a relative tolerance of a baseline of 0 is 0: one level of rounding would fail, a leak of 0.01 MiB would
    p = profile(tmp_path, "[baseline]\ntolerance = 0.10\n")
    base = Baseline(write_baseline(tmp_path, {"seed.repeat_max_abs_diff": 0.0, "memory.host_per_request": 0.0}))
    assert judge(Metric("seed.repeat_max_abs_diff", 1, "levels", "lower"), "t", p, base).verdict == "pass"
    drift = judge(Metric("seed.repeat_max_abs_diff", 2, "levels", "lower"), "t", p, base)
    assert drift.verdict == "fail" and "10% + 1levels" in drift.reasons[0]
    assert judge(Metric("memory.host_per_request", 0.3, "MiB/request", "lower"), "t", p, base).verdict == "pass"
    assert judge(Metric("memory.host_per_request", 40, "MiB/request", "lower"), "t", p, base).verdict == "fail"


def test_baseline_of_another_schema_is_refused(tmp_path):
    with pytest.raises(ValueError, match="schema_version 1.0 is not 2.x"):
        Baseline(write_baseline(tmp_path, {}, version="1.0"))


def test_a_baseline_from_another_target_profile_or_machine_is_named(tmp_path):
    env = {"cpu": "x86", "cpu_count": 2, "gpus": []}
    cpu = Profile.load("cpu-tiny")
    base = Baseline(write_baseline(tmp_path, {}, spec="reference", environment=env))
    assert base.differences("reference", None, cpu, env) == []
    other = base.differences("pipeline:preset=tiny-dev", "reference", Profile.load("flux-dev-h100"),
                             {"cpu": "arm", "cpu_count": 2, "gpus": [{"name": "NVIDIA H100"}]})
    text = "; ".join(other)
    assert "target 'pipeline:preset=tiny-dev' (the baseline's: 'reference')" in text
    assert "baseline target 'reference' (the baseline's: None)" in text
    assert "profile 'flux-dev-h100'" in text and "setting size=1024 (the baseline's: 256)" in text
    assert "CPU 'arm'" in text and "GPUs ['NVIDIA H100'] (the baseline's: [])" in text


def test_verdicts_roll_up_to_the_run(tmp_path):
    run = Run(id="r", dir=tmp_path, target_spec="reference", profile={"name": "cpu-tiny"}, status="complete")
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


def test_a_profile_requires_learned_metrics_by_name():
    assert Profile.parse({"require": ["lpips", "fid"]}).require == ["lpips", "fid"]
    assert Profile.load("flux-dev-h100").require == ["clip_score"]
    with pytest.raises(ValueError, match="require: 'lpip' is not one fluxgate knows; did you mean 'lpips'"):
        Profile.parse({"require": ["lpip"]})
    with pytest.raises(ValueError, match="require = 'lpips' must be a list of metric names"):
        Profile.parse({"require": "lpips"})
    with pytest.raises(ValueError, match=r"\[settings\] clip_model = 14: must be str"):
        Profile.parse({"settings": {"clip_model": 14}})
