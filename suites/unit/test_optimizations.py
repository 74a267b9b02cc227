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
