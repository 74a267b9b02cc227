"""python -m targets.reference: the README's first look at the reference, end to end."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image


def run(*args):
    return subprocess.run([sys.executable, "-m", "targets.reference", *args], capture_output=True, text=True)


@pytest.mark.slow
def test_generates_compares_and_writes(tmp_path):
    done = run("--size", "64", "--steps", "2", "--preset", "tiny-schnell", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["max_abs_diff"] <= 1 and set(summary["targets"]) == {"reference", "pipeline"}
    assert Image.open(tmp_path / "reference.png").size == (64, 64)


@pytest.mark.slow
def test_bad_input_is_one_clear_line(tmp_path):
    done = run("--size", "100", "--out", str(tmp_path))
    assert done.returncode == 2
    assert "height=100" in done.stderr and "multiple of 16" in done.stderr and "Traceback" not in done.stderr
