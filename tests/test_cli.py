"""python -m targets.reference: the README's first look at the reference, end to end in a subprocess; its bad
input through its main() here."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from runs import captured
from targets.reference.__main__ import main


def run(*args):
    return subprocess.run([sys.executable, "-m", "targets.reference", *args], capture_output=True, text=True)


@pytest.mark.slow
def test_generates_compares_and_writes(tmp_path):
    done = run("--size", "64", "--steps", "2", "--preset", "tiny-schnell", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["max_abs_diff"] <= 1 and set(summary["targets"]) == {"reference", "pipeline"}
    assert Image.open(tmp_path / "reference.png").size == (64, 64)


def test_bad_input_is_one_clear_line(tmp_path):
    code, output = captured(main, ["--size", "100", "--out", str(tmp_path)])
    assert code == 2
    assert "height=100" in output and "multiple of 16" in output and "Traceback" not in output
