#!/usr/bin/env python
"""fluxgate: run the suites against a target, gate the results, write the reports.

    python run_tests.py                                    all suites: diffusers' pipeline on the embedded
                                                           tiny-dev, judged against the reference oracle
    python run_tests.py --category performance --category quality --target pipeline:preset=tiny-dev
    python run_tests.py --baseline results/<id>/report.json   fail on a regression past tolerance
    python run_tests.py --shard 1/2 --out shards/1         one of two machines' share (python -m reports.merge)

Other arguments go to pytest as they are (e.g. -k latency, -x, -v).
Exit codes: 0 all passed, 1 a test or gate failed (or the run was interrupted), 2 usage error,
3 target unavailable, 4 internal error (fluxgate or pytest itself broke: a bug to report, not a verdict).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.record import FOLDERS
from harness.target import DEFAULT as DEFAULT_TARGET

ROOT = Path(__file__).resolve().parent
CATEGORIES = {**FOLDERS, **{marker: marker for marker in FOLDERS.values()}}  # folder or marker name -> marker
OK, FAILED, USAGE, UNAVAILABLE, INTERNAL = 0, 1, 2, 3, 4


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="run_tests.py", description=__doc__.split("\n\n")[0],
                                     epilog="Other arguments are passed to pytest.")
    parser.add_argument("--target", default=DEFAULT_TARGET, metavar="SPEC",
                        help=f"what to test (default: {DEFAULT_TARGET}, diffusers on the embedded preset, on the CPU)")
    parser.add_argument("--category", action="append", default=[], metavar="C",
                        help=f"run only this suite; repeatable ({', '.join(sorted(set(CATEGORIES.values())))})")
    parser.add_argument("--profile", default="cpu-tiny", metavar="NAME|PATH", help="threshold profile")
    parser.add_argument("--baseline", metavar="REPORT", help="an earlier report.json to compare with")
    parser.add_argument("--force-baseline", action="store_true",
                        help="compare with a baseline from another target, profile or hardware all the same")
    parser.add_argument("--baseline-target", metavar="SPEC", help="a second target to measure speed-up against")
    parser.add_argument("--golden", metavar="DIR", help="where the oracle's golden images are kept")
    parser.add_argument("--prompts", metavar="FILE", help="the quality suite's prompt set: one per line, or JSON "
                                                          "Lines of {prompt, category}")
    parser.add_argument("--skip-slow", action="store_true", help="skip tests marked slow")
    parser.add_argument("--skip-gpu", action="store_true", help="skip tests marked gpu")
    parser.add_argument("--out", default="results", metavar="DIR", help="reports go to DIR/<run id>/")
    parser.add_argument("--shard", metavar="i/N", help="run shard i of N (a CI matrix); python -m reports.merge puts "
                                                      "the shards' reports together")
    parser.add_argument("-n", dest="workers", metavar="N",
                        help="parallel workers (pytest-xdist): worker i on GPU i alone (of CUDA_VISIBLE_DEVICES where "
                             "set), on the CPU where there is no GPU; 'auto' for one per GPU (one per CPU without one)")
    return parser.parse_known_args(argv)


def check(args: argparse.Namespace) -> str | None:
    """Refuse a bad invocation before any test runs: one line naming the value and the rule."""
    from harness import gpus, prompts
    from harness.gates import Baseline, Profile
    from harness.shard import Shard
    from harness.target import make_target

    unknown = [c for c in args.category if c not in CATEGORIES]
    if unknown:
        return f"--category {unknown[0]!r}: not a suite (choose from {', '.join(sorted(set(CATEGORIES.values())))})"
    try:
        Profile.load(args.profile)
        if args.baseline:
            Baseline(args.baseline)
        if args.prompts:
            prompts.load(args.prompts)
        if args.shard:
            Shard.parse(args.shard)
        for spec in filter(None, (args.target, args.baseline_target)):
            make_target(spec)  # constructs, does not start: a bad SPEC fails here, an unreachable one later
        if args.workers and args.workers.isdigit():
            gpus.assign(int(args.workers), gpus.visible())  # more workers than GPUs
    except (ValueError, FileNotFoundError) as e:
        return str(e)
    return None


def pytest_args(args: argparse.Namespace, extra: list[str]) -> list[str]:
    out = [str(ROOT / "suites"), "-p", "no:cacheprovider", f"--target={args.target}", f"--profile={args.profile}",
           f"--out={args.out}", "-o", "console_output_style=progress"]
    markers = [CATEGORIES[c] for c in dict.fromkeys(args.category)]
    expression = " or ".join(markers)
    if args.skip_slow:
        out.append("--skip-slow")
    if args.skip_gpu:
        out.append("--skip-gpu")
    if expression:
        out += ["-m", expression]
    if args.baseline:
        out.append(f"--baseline={args.baseline}")
    if args.force_baseline:
        out.append("--force-baseline")
    if args.golden:
        out.append(f"--golden={args.golden}")
    if args.prompts:
        out.append(f"--prompts={args.prompts}")
    if args.baseline_target:
        out.append(f"--baseline-target={args.baseline_target}")
    if args.shard:
        out.append(f"--shard={args.shard}")
    if args.workers:
        out += ["-n", args.workers]
    return out + extra


def main(argv: list[str] | None = None) -> int:
    args, extra = parse(sys.argv[1:] if argv is None else argv)
    problem = check(args)
    if problem:
        print(f"run_tests.py: error: {problem}", file=sys.stderr)
        return USAGE
    import pytest

    run = Probe()
    code = pytest.main(pytest_args(args, extra), plugins=[run])
    if code == pytest.ExitCode.INTERNAL_ERROR:  # pytest's 3; the plugin's "unavailable" is 3 as well
        return UNAVAILABLE if run.status == "target_unavailable" else INTERNAL
    return {pytest.ExitCode.OK: OK, pytest.ExitCode.TESTS_FAILED: FAILED, pytest.ExitCode.INTERRUPTED: FAILED,
            pytest.ExitCode.USAGE_ERROR: USAGE, pytest.ExitCode.NO_TESTS_COLLECTED: USAGE}.get(code, code)


class Probe:
    """Reads how the run ended, so that the plugin's "target unavailable" and pytest's internal error, both
    pytest's exit 3, become two codes."""

    status: str | None = None

    def pytest_unconfigure(self, config):
        from harness.plugin import RUN  # imported by pytest by now, so its asserts are rewritten

        run = config.stash.get(RUN, None)
        self.status = run.status if run else None


if __name__ == "__main__":
    sys.exit(main())
