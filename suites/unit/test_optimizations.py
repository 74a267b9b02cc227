"""Optimizations, where the target says which it applies (the optimized target's describe(): each option
asked for, and how many of the modules it is for now have it, read from the modules themselves)."""
from __future__ import annotations

import pytest


def test_every_optimization_asked_for_took_effect(target, make_request, recorder):
    if "evidence" not in target.describe():
        pytest.skip(f"{target.name} does not say which optimizations it applies")
    target.generate(make_request())
    described = target.describe()
    asked = [name for name, value in described["options"].items() if value and name != "steps"]  # steps: per request
    evidence = described["evidence"]
    for name in asked:
        recorder.note(f"{name}: {evidence.get(name)}")
    unproven = [name for name in asked if name not in evidence]
    partial = [f"{name} on {e['applied']} of {e['of']}" for name, e in evidence.items()
               if not 0 < e["applied"] == e["of"]]
    assert not unproven, f"no evidence that {', '.join(unproven)} took effect"
    assert not partial, f"options that did not take effect everywhere: {'; '.join(partial)}"


def test_the_optimized_transformer_stays_near_the_plain_one(target, profile, recorder):
    """One transformer call of the target against the plain pipeline's on the same weights and inputs: the
    error its optimizations bring into a single step, before any sampler compounds it (the profile bounds
    `unit.velocity_rel_error`). A step cache reuses across steps: each call here starts it afresh."""
    if not hasattr(target, "options"):
        pytest.skip(f"{target.name} is not an optimized target: there is no plain transformer to compare with")
    from harness.target import make_target

    size = profile.get("load_size")
    with make_target(f"pipeline:{target.plain_options()}") as plain:
        txt, vec, _ = plain.encode(["a red fox in the snow"])
        img = plain.sampling.pack(plain.sampling.get_noise([0], size, size, plain.dtype).to(plain.device))
        errors = []
        for sigma in (1.0, 0.5):
            step = {"sigma": sigma, "guidance": 3.5, "height": size, "width": size}
            expected = plain.velocity(img, txt, vec, **step).float()
            got = target.velocity(img, txt, vec, **step).float()
            errors.append(((got - expected).norm() / expected.norm()).item())
    recorder.note(f"relative error at sigma 1 and 0.5: {errors[0]:.2e}, {errors[1]:.2e}")
    recorder.metric("unit.velocity_rel_error", max(errors), "", better="lower")
