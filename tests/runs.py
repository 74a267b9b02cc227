"""run_tests.py from a test, two ways: in a subprocess as a user or CI runs it, for what needs a fresh interpreter
(the exit code the shell sees, signals, crashes, the default run end to end), and in this interpreter, where
torch, diffusers and transformers are imported once instead of once a run (5 to 9 s each on two cores).

Both run the suites with tests/selftest.toml (cpu-tiny's gates, fewer samples) unless told another profile.
"""
from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SELFTEST = str(Path(__file__).with_name("selftest.toml"))
PLUGINS = ["-p", "harness.plugin", "-p", "reports.plugin", "-p", "no:cacheprovider"]  # pytest with fluxgate's plugins


def command(args: tuple[str, ...], out: Path, profile: str | None) -> list[str]:
    """run_tests.py's arguments: ARGS, the profile unless ARGS name one (None: run_tests.py's default), OUT."""
    named = any(a == "--profile" or a.startswith("--profile=") for a in args)
    return [*args, *(["--profile", profile] if profile and not named else []), f"--out={out}"]


def run_tests(*args: str, out: Path, profile: str | None = SELFTEST) -> tuple[int, str, dict | None]:
    """(exit code, output, report.json or None) of `python run_tests.py ARGS --out OUT` in a subprocess."""
    done = subprocess.run([sys.executable, str(ROOT / "run_tests.py"), *command(args, out, profile)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr, load_report(out)


def run_suites(*args: str, out: Path, profile: str | None = SELFTEST) -> tuple[int, str, dict | None]:
    """The same as run_tests(), through run_tests.main() in this interpreter: the same checks, pytest session,
    exit codes and reports. Suite modules import as suites.<folder>.<name> (pytest's importlib mode), so that
    suites/stress/test_load.py and tests/test_load.py do not take each other's place in sys.modules."""
    import run_tests as cli

    code, output = captured(cli.main, [*command(args, out, profile), "--import-mode=importlib"])
    return code, output, load_report(out)


def captured(main, argv: list[str]) -> tuple[int, str]:
    """(exit code, what it printed) of a command's MAIN(ARGV) called here: run_tests.main, pytest.main, or
    another CLI's main. Unlike pytester's in-process runs, modules it imports stay imported: torch and its
    extensions cannot be imported twice in one process."""
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        code = main(argv)
    return int(code), output.getvalue()


def load_report(out: Path) -> dict | None:
    reports = sorted(out.glob("*/report.json"))
    return json.loads(reports[-1].read_text()) if reports else None


def metrics(report: dict, test: str) -> dict[str, float]:
    """The values of the metrics test TEST recorded (over its parametrizations)."""
    found = [t for t in report["tests"] if t["nodeid"].split("::")[1].split("[")[0] == test]
    assert found, f"{test} did not run"
    return {m["name"]: m["value"] for t in found for m in t["metrics"]}
