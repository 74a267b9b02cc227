"""Every gate fails on a target that deserves it: the reference with one flaw fails the tests of the suites that are
meant to catch that flaw, run alone in this interpreter. (The plain targets passing every suite is
tests/test_run_tests.py's first test.)"""
from __future__ import annotations

import pytest

from harness.gates import Profile
from runs import SELFTEST, run_suites

FLAWS = [  # flaw, the suites that must catch it, a test of each that must fail there (one run a flaw)
    ("noise=6", ["integration", "quality"],
     ["test_equivalent_to_the_reference", "test_similar_to_the_reference_over_prompts"]),
    ("colour_shift=12", ["integration", "quality"],
     ["test_equivalent_to_the_reference", "test_similar_to_the_reference_over_prompts"]),
    ("ignore_seed=1", ["integration"], ["test_seeds_decide_the_image"]),
    ("ignore_lora=1", ["integration"], ["test_lora"]),
    ("raise_on=fox", ["integration"], ["test_every_smoke_prompt_succeeds"]),
    ("raise_on=cat", ["edge_case"], ["test_unusual_prompts_give_images"]),
    ("leak_mb=40", ["stress"], ["test_memory_is_stable_under_sustained_load"]),
    ("ignore_image=1,preset=tiny-kontext", ["integration"], ["test_the_input_image_decides_the_edit"]),
]


@pytest.mark.parametrize("flaw,categories,tests", FLAWS, ids=[f for f, _, _ in FLAWS])
def test_the_suite_catches_the_flaw(tmp_path, flaw, categories, tests):
    chosen = [arg for category in categories for arg in ("--category", category)]
    code, output, report = run_suites(*chosen, "-k", " or ".join(tests), "--target", f"tests.fakes:Flawed:{flaw}",
                                      out=tmp_path)
    assert code == 1, output[-3000:]
    ran = {t["nodeid"].split("::")[1].split("[")[0]: t["verdict"] for t in report["tests"]}
    for test in tests:
        assert ran.get(test) == "fail", f"{test} did not fail despite {flaw}: {ran}"
    for category in categories:
        assert report["categories"][category]["verdict"] == "fail"


def h100_equivalence(tmp_path) -> str:
    """flux-dev-h100's equivalence and quality thresholds over the self-test profile: the bf16 gates, on a CPU."""
    gates = {k: v for k, v in Profile.load("flux-dev-h100").thresholds.items() if k.startswith(("equivalence.", "quality."))}
    lines = [f'"{k}" = {{ {", ".join(f"{b} = {v}" for b, v in bounds.items())} }}' for k, bounds in gates.items()]
    path = tmp_path / "h100-equivalence.toml"
    path.write_text(f'name = "h100-equivalence"\nextends = "{SELFTEST}"\n[thresholds]\n' + "\n".join(lines) + "\n")
    return str(path)


@pytest.mark.parametrize("flaw", ["colour_shift=12", "noise=6"])
def test_the_gpu_profile_catches_what_psnr_and_ssim_forgive(tmp_path, flaw):
    """A +12-level cast on one channel and sigma-6 noise pass flux-dev-h100's PSNR (30 dB) and SSIM (0.95)
    gates; its mean and per-channel difference gates fail them."""
    code, output, report = run_suites("--category", "integration", "--category", "quality", "-k",
                                     "equivalent or similar", "--profile", h100_equivalence(tmp_path),
                                     "--target", f"tests.fakes:Flawed:{flaw}", out=tmp_path)
    assert code == 1, output[-3000:]
    metrics = {m["name"]: m for t in report["tests"] for m in t["metrics"]}
    for forgiving in ("equivalence.psnr", "equivalence.ssim", "quality.psnr.min", "quality.ssim.min"):
        assert metrics[forgiving]["verdict"] == "pass", metrics[forgiving]
    caught = "channel_shift" if flaw.startswith("colour") else "mean_abs_diff"
    for name in (f"equivalence.{caught}", f"quality.{caught}.max"):
        assert metrics[name]["verdict"] == "fail", metrics[name]


@pytest.mark.slow
def test_speedup_gate_fails_a_target_slower_than_its_baseline(tmp_path):
    profile = tmp_path / "speed.toml"
    profile.write_text('name = "speed"\n[settings]\nsize = 64\nsteps = 1\nspeedup_runs = 5\n'
                       '[thresholds]\n"speedup" = { min = 1.0 }\n')
    args = ("--category", "performance", "-k", "speedup", "--profile", str(profile))
    slow = "tests.fakes:Flawed:delay=0.2"
    code, output, report = run_suites(*args, "--baseline-target", slow, out=tmp_path / "faster")
    assert code == 0, output[-3000:]
    speedup = report["tests"][0]["metrics"][0]
    assert speedup["value"] > 1.5 and speedup["n"] == 5   # the plain pipeline beats the delayed reference
    assert speedup["interval"][0] <= speedup["value"] <= speedup["interval"][1]
    code, output, report = run_suites(*args, "--target", slow, "--baseline-target", "reference", out=tmp_path / "slower")
    assert code == 1 and "speedup" in output and "below the minimum 1" in output


def test_a_slow_target_has_no_rate_with_p99_under_the_bound(tmp_path):
    """MLPerf Server's capacity: at a request a second, a target that takes 0.6 s over every answer is served
    in full but has no p99 under a 0.5 s bound, and fails the gate on capacity.p99_bounded_rate (at least 1/s);
    the plain reference passes it."""
    profile = tmp_path / "bound.toml"
    profile.write_text(f'name = "bound"\nextends = "{SELFTEST}"\n[settings]\ncapacity_p99_bound = 0.5\n'
                       "capacity_start = 1.0\ncapacity_max = 1.0\ncapacity_step = 2.0\n")
    for target, verdict, rate in (("tests.fakes:Flawed:delay=0.6", "fail", 0.0), ("reference", "pass", 1.0)):
        code, output, report = run_suites("--category", "stress", "-k", "highest", "--target", target,
                                          "--profile", str(profile), out=tmp_path / verdict)
        (test,) = report["tests"]
        metrics = {m["name"]: m for m in test["metrics"]}
        assert metrics["capacity.sustained_rate"]["value"] == 1.0, output[-2000:]
        assert metrics["capacity.p99_bounded_rate"]["value"] == rate
        assert metrics["capacity.p99_bounded_rate"]["verdict"] == test["verdict"] == verdict
