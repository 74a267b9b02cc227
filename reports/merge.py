"""python -m reports.merge SHARD... [--out DIR]: the reports of a run's shards (run_tests.py --shard i/N, one per
machine) as the report of the whole run, with one verdict: report.json, report.html and junit.xml in DIR.

The shards of one run share their target, profile (its hash), baseline and shard count, and each index from 1 to
N is given once; anything else is refused, naming the difference. --partial merges runs that are not all the
shards of one run, or not shards at all (runs over parts of a prompt set), as long as they share the rest.

- Tests: the union of the shards'. A test in several shards (one over the quality prompt set, which each shard
  runs over its share of the prompts) is one test: failed (or error) if it failed in any, skipped only if skipped
  in all, its durations summed, its images, comparisons, notes and artifacts together.
- Its metrics merge by the rule harness/metrics/catalogue.py gives each (`merge`): a mean over prompts weighted
  by their count n, the worst prompt's min or max, FID and CMMD from the features the shards kept
  (harness/metrics/shards.py), a multiple of the floor from the merged distance and floor: what one run over
  every prompt records, to float rounding. A metric without a rule, or without what its rule needs, takes the
  worst shard's value, and its note says it is not merged exactly.
- Every metric is judged again against the profile and the baseline's values the shards recorded: the verdict is
  the merged metrics', not a copy of the shards'. The run is complete only if every shard is.

Each shard's files are copied under DIR/shard-<i>/, so that the folder travels alone.
Exit status: 0 pass, 1 fail (or a shard did not complete), 2 usage error.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import shutil
import sys
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np

from harness.gates import Profile, failure, judge
from harness.metrics import catalogue, shards
from harness.metrics.floor import over
from harness.record import Metric, Run, TestRecord, new_run_id
from reports.compare import load
from reports.html import failures, write_html
from reports.json_report import write_json
from reports.junit import write_junit

SAME = {  # what the shards of one run share
    "target": lambda r: r["target"]["spec"],
    "profile": lambda r: f"{r['profile']['name']} (sha256 {r['profile']['sha256'][:12]})",
    "baseline": lambda r: r["baseline"],
    "baseline target": lambda r: r["baseline_target"],
}
Features = Callable[[tuple[Path, ...]], dict[str, tuple[float, list[int]]]]


@dataclasses.dataclass
class Recorded:
    """The baseline as the shards recorded it beside their metrics: all judge() reads of a Baseline (whose file
    may be on another machine)."""
    values: dict[tuple[str, str], float]

    def get(self, nodeid: str, metric: str) -> float | None:
        return self.values.get((nodeid, metric))


def check(runs: list[tuple[Path, dict]], partial: bool) -> None:
    """Refuse, naming the difference, reports that are not the shards of one run."""
    same = dict(SAME)
    if not partial:
        for path, report in runs:
            if not report["run"].get("shard"):
                raise ValueError(f"{path}: not a shard (a run without --shard); --partial merges it all the same")
        same["shard count"] = lambda r: r["run"]["shard"]["count"]
    (first, one), *others = runs
    for path, report in others:
        for what, of in same.items():
            if of(report) != of(one):
                raise ValueError(f"{path}: {what} {of(report)!r}, where {first} has {of(one)!r}: the shards of one "
                                 f"run share their {', '.join(same)}")
    if partial:
        return
    given, count = {}, one["run"]["shard"]["count"]
    for path, report in runs:
        index = report["run"]["shard"]["index"]
        if index in given:
            raise ValueError(f"shard {index}/{count} given twice: {given[index]} and {path}")
        given[index] = path
    missing = [f"{i}/{count}" for i in range(1, count + 1) if i not in given]
    if missing:
        present = ", ".join(f"{i}/{count}" for i in sorted(given))
        raise ValueError(f"shard {', '.join(missing)} missing (given: {present}); --partial merges what is given")


def profile_of(report: dict) -> Profile:
    """The profile the shards were judged by, exactly: parsed from the content their report keeps, or, for one
    that extends another (whose content is both files' text, not one TOML), loaded by its path or name where its
    sha256 is still the same."""
    recorded = report["profile"]
    with contextlib.suppress(tomllib.TOMLDecodeError):
        data = tomllib.loads(recorded["content"])
        if "extends" not in data:
            return Profile.parse(data, recorded["content"], recorded["path"], recorded["name"])
    for source in filter(None, (recorded["path"], recorded["name"])):
        with contextlib.suppress(ValueError):
            profile = Profile.load(source)
            if profile.sha256 == recorded["sha256"]:
                return profile
    raise ValueError(f"profile {recorded['name']!r} extends another, and no file here ({recorded['path']} or the "
                     f"profile of that name) holds what the shards were judged by (sha256 {recorded['sha256'][:12]})")


def records(report: dict, folder: str) -> list[TestRecord]:
    """A report's tests as records, the paths of their files under FOLDER."""
    fields = {f.name for f in dataclasses.fields(TestRecord)}

    def moved(entry: dict, keys: tuple[str, ...]) -> dict:
        return {**entry, **{key: f"{folder}/{entry[key]}" for key in keys}}

    return [TestRecord(**{**{k: v for k, v in t.items() if k in fields},
                          "metrics": [Metric(**m) for m in t["metrics"]],
                          "images": [moved(im, ("path",)) for im in t["images"]],
                          "artifacts": [moved(a, ("path",)) for a in t["artifacts"]],
                          "comparisons": [moved(c, ("target", "reference", "difference"))
                                          for c in t.get("comparisons", [])]})
            for t in report["tests"]]


def whole_set(paths: tuple[Path, ...]) -> dict[str, tuple[float, list[int]]]:
    """FID and CMMD, and their floors, over the images of the runs at PATHS together, where all kept features."""
    try:
        return shards.merge(list(paths))
    except ValueError:  # none kept any
        return {}


def combine(name: str, found: list[tuple[Path, Metric]], rule: str, merged: dict[str, Metric],
            features: Features) -> Metric:
    """One metric of a test from its values in several shards (each with its report's path), by RULE; MERGED: the
    test's metrics merged so far."""
    metrics = [m for _, m in found]
    if len(metrics) == 1:
        return metrics[0]
    values, ns = [m.value for m in metrics], [m.n for m in metrics]
    n = None if None in ns else sum(ns)
    value = None
    if rule in ("min", "max"):
        value = min(values) if rule == "min" else max(values)
    elif rule == "mean" and n:
        value = float(np.dot(values, ns) / n)
    elif rule == "features" and name in (whole := features(tuple(path for path, _ in found))):
        value, n = whole[name][0], sum(whole[name][1])
    elif rule == "over_floor":
        base = name.removesuffix(".over_floor")
        distance = merged.get(base, merged.get(f"{base}.mean"))  # LPIPS's distance is its mean over prompts
        floor = merged.get(f"{base}.floor")
        if distance and floor and not (distance.note or floor.note):
            value = over(distance.value, floor.value)
    if value is not None:
        return dataclasses.replace(metrics[0], value=value, n=n, interval=None, note=None)
    better = metrics[0].better
    worst = max(values) if better == "lower" else min(values) if better == "higher" else values[0]
    return dataclasses.replace(metrics[0], value=worst, n=n, interval=None, note=(
        f"not merged exactly: the {'worst' if better else 'first'} of the shards' values "
        f"({', '.join(f'{v:.4g}' for v in values)})"))


def ungated(test: TestRecord) -> str:
    """The test's outcome but for its gates (a merge judges them again)."""
    gates = [r for m in test.metrics for r in m.reasons]
    return "passed" if test.outcome == "failed" and gates and test.message == failure(gates) else test.outcome


def merge_test(found: list[tuple[Path, TestRecord]], profile: Profile, baseline: Recorded | None,
               features: Features) -> TestRecord:
    """One test from its records in the shards that ran it (each with its report's path), judged again."""
    tests = [t for _, t in found]
    outcomes = [ungated(t) for t in tests]
    failed = [(o, t) for o, t in zip(outcomes, tests) if o in ("failed", "error")]
    outcome = failed[0][0] if failed else "skipped" if set(outcomes) == {"skipped"} else "passed"
    named: dict[str, list[tuple[Path, Metric]]] = {}
    for path, test in found:
        for m in test.metrics:
            named.setdefault(m.name, []).append((path, m))
    rules = {name: getattr(catalogue.find(name, profile.metrics), "merge", "") for name in named}
    merged: dict[str, Metric] = {}
    for name in sorted(named, key=lambda name: rules[name] == "over_floor"):  # made of the others: last
        merged[name] = combine(name, named[name], rules[name], merged, features)
    metrics = [judge(merged[name], tests[0].nodeid, profile, baseline) for name in named]
    message = "\n".join(t.message or "failed" for _, t in failed) or None
    gates = [r for m in metrics for r in m.reasons]
    if outcome == "passed" and gates:
        outcome, message = "failed", failure(gates)
    return dataclasses.replace(
        tests[0], outcome=outcome, message=message, duration=sum(t.duration for t in tests),
        skip_reason=tests[0].skip_reason if outcome == "skipped" else None, metrics=metrics,
        **{key: [x for t in tests for x in getattr(t, key)] for key in ("images", "artifacts", "notes", "comparisons")})


def merge(paths: list[str], out: Path, partial: bool = False) -> Run:
    """The shards' reports at PATHS (run folders or report.json files) as one run in OUT, its reports written."""
    runs = sorted(load(paths), key=lambda run: (run[1]["run"].get("shard") or {}).get("index", 0))
    check(runs, partial)
    one = runs[0][1]
    profile = profile_of(one)
    baseline = Recorded({(t["nodeid"], m["name"]): m["baseline"] for _, r in runs for t in r["tests"]
                         for m in t["metrics"] if m["baseline"] is not None}) if one["baseline"] else None
    found: dict[str, list[tuple[Path, TestRecord]]] = {}
    for k, (path, report) in enumerate(runs, 1):
        if (path.parent / "artifacts").is_dir():
            shutil.copytree(path.parent / "artifacts", out / f"shard-{k}" / "artifacts", dirs_exist_ok=True)
        for test in records(report, f"shard-{k}"):
            found.setdefault(test.nodeid, []).append((path, test))
    features = functools.cache(whole_set)
    ends = [r["run"]["finished"] for _, r in runs]
    run = Run(id=out.name, dir=out.resolve(), target_spec=one["target"]["spec"], profile=dict(one["profile"]),
              baseline=one["baseline"], baseline_target=one["baseline_target"],
              started=min(datetime.fromisoformat(r["run"]["started"]).timestamp() for _, r in runs),
              finished=None if None in ends else max(datetime.fromisoformat(end).timestamp() for end in ends),
              status=next((r["run"]["status"] for _, r in runs if r["run"]["status"] != "complete"), "complete"),
              shards=[{"index": None, "count": None, **(r["run"].get("shard") or {}), "id": r["run"]["id"],
                       "status": r["run"]["status"], "verdict": r["run"]["verdict"],
                       "host": r["environment"].get("host")} for _, r in runs],
              target={k: v for k, v in one["target"].items() if k != "spec"}, environment=one["environment"],
              tests={nodeid: merge_test(parts, profile, baseline, features) for nodeid, parts in found.items()})
    run.profile["unmatched"] = run.unmatched(profile)
    run.exit_code = 1 if run.verdict in ("fail", "error") else 0
    out.mkdir(parents=True, exist_ok=True)
    for write in (write_json, write_html, write_junit):
        write(run)
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports.merge", description=__doc__.split("\n\n")[0])
    parser.add_argument("shards", nargs="+", metavar="SHARD", help="a shard's run folder or its report.json")
    parser.add_argument("--out", type=Path, help="the merged run's folder (default: results/<run id>)")
    parser.add_argument("--partial", action="store_true",
                        help="merge runs that are not all the shards of one run, or not shards at all")
    args = parser.parse_args(argv)
    try:
        run = merge(args.shards, args.out or Path("results") / new_run_id(), args.partial)
    except (ValueError, KeyError, OSError) as e:  # KeyError: a report.json without a field every report has
        print(f"reports.merge: {f'a report lacks the field {e}' if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    print(f"fluxgate merge: {run.verdict.upper()}  ({len(run.shards)} shards, {run.status}; target {run.target_spec}, "
          f"profile {run.profile['name']})")
    for failed in failures(run.to_dict()):
        print(f"failed: {failed['nodeid']}: {failed['why'][0]}")
    print(f"reports: {run.dir}")
    return run.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
