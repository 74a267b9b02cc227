"""Every gate fails on a target that deserves it: the reference with one flaw fails the suite meant to
catch that flaw. (The plain reference passing every suite is tests/test_run_tests.py's first test.)"""
from __future__ import annotations

import pytest

from test_run_tests import run_tests

FLAWS = [  # flaw, the suite that must catch it, a test that must fail there
    ("noise=6", "integration", "test_equivalent_to_the_reference"),
    ("noise=6", "quality", "test_similar_to_the_reference_over_prompts"),
    ("colour_shift=12", "quality", "test_similar_to_the_reference_over_prompts"),
    ("ignore_seed=1", "integration", "test_seeds_decide_the_image"),
    ("ignore_lora=1", "integration", "test_lora"),
    ("raise_on=fox", "integration", "test_every_smoke_prompt_succeeds"),
    ("raise_on=cat", "edge_case", "test_unusual_prompts_give_images"),
    ("leak_mb=40", "stress", "test_memory_is_stable_under_sustained_load"),
]


@pytest.mark.parametrize("flaw,category,test", FLAWS, ids=[f"{f}-{c}" for f, c, _ in FLAWS])
def test_the_suite_catches_the_flaw(tmp_path, flaw, category, test):
    code, output, report = run_tests("--category", category, "--target", f"tests.fakes:Flawed:{flaw}",
                                     out=tmp_path)
    assert code == 1, output[-3000:]
    failed = {t["nodeid"].split("::")[1].split("[")[0] for t in report["tests"] if t["verdict"] == "fail"}
    assert test in failed, f"{test} passed despite {flaw}; failed: {failed}"
    assert report["categories"][category]["verdict"] == "fail"


def test_speedup_gate_fails_a_target_slower_than_its_baseline(tmp_path):
    profile = tmp_path / "speed.toml"
    profile.write_text('name = "speed"\n[settings]\nsize = 64\nsteps = 1\nspeedup_runs = 3\n'
                       '[thresholds]\n"speedup" = { min = 1.0 }\n')
    args = ("--category", "performance", "-k", "speedup", "--profile", str(profile))
    slow = "tests.fakes:Flawed:delay=0.2"
    code, output, report = run_tests(*args, "--baseline-target", slow, out=tmp_path / "faster")
    assert code == 0, output[-3000:]
    assert report["tests"][0]["metrics"][0]["value"] > 1.5      # the plain reference beats the delayed one
    code, output, report = run_tests(*args, "--target", slow, "--baseline-target", "reference", out=tmp_path / "slower")
    assert code == 1 and "speedup" in output and "below the minimum 1" in output
