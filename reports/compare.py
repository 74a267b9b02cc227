"""python -m reports.compare RUN_OR_REPORT RUN_OR_REPORT [...]: runs side by side, the first as the base.

Every metric the runs share (the same test's same metric) with each later run's change from the first and its
verdict against the tolerance the profile gives it: regressed or improved past it, same within it, info for a
metric with no better direction. What makes the runs incomparable (another target, profile or hardware) is
stated, not refused: comparing two targets is often the point. Written to --out:

    compare.html   the verdict first, the changes as a chart, a trend chart per metric over the runs, every row
    compare.json   the same rows, for a machine
    compare.md     regressions and improvements as a table, for a pull-request comment

Exit status: 0 nothing regressed in the last run against the first, 1 something did, 2 a usage error.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from harness.gates import Baseline, Profile, change
from harness.settings import NAMES, Settings
from harness.metrics.shards import report_path
from reports.charts import ACCENT, COLOURS, change_chart, draw, figure, label, percent, style
from reports.html import environment

TRENDS_PER_CHART = 12  # small multiples, 4 across


@dataclass
class Row:
    test: str           # nodeid
    metric: str
    unit: str
    better: str | None
    values: list[float]     # one per run, in the order given
    changes: list[float | None]   # per cent from the first run's value (None for the first, or from 0)
    verdicts: list[str]     # per later run: regressed | improved | same | info


def load(paths: list[str]) -> list[tuple[Path, dict]]:
    runs = []
    for given in paths:
        path = report_path(given)
        try:
            runs.append((path, json.loads(path.read_text())))
        except ValueError as e:
            raise ValueError(f"{given!r}: not a readable report.json ({e})") from None
    return runs


def profile_of(report: dict, given: str | None) -> Profile:
    """The profile whose tolerances judge the changes: --profile, else the last run's own if it can still be
    loaded (by its path, then its name), else the defaults (10%, the catalogue's absolute slack)."""
    for candidate in (given, report["profile"].get("path"), report["profile"].get("name")):
        if candidate:
            try:
                return Profile.load(candidate)
            except ValueError:
                if candidate == given:
                    raise
    return Profile("defaults")


def recorded_profile(report: dict) -> Profile:
    """The profile a run was made with, as its report recorded it (name and settings), whether or not its file
    is still here: what another run's differences are stated against."""
    settings = {k: v for k, v in report["profile"].get("settings", {}).items() if k in NAMES}
    return Profile(report["profile"]["name"], settings=Settings(**settings))


def rows(reports: list[dict], profile: Profile) -> list[Row]:
    per_run = [{(t["nodeid"], m["name"]): m for t in r["tests"] for m in t["metrics"]} for r in reports]
    out = []
    for key, first in per_run[0].items():
        if not all(key in run for run in per_run[1:]):
            continue
        values = [run[key]["value"] for run in per_run]
        tol = profile.tolerance_for(first["name"])
        out.append(Row(key[0], first["name"], first["unit"], first["better"], values,
                       [None] + [percent(v, values[0]) for v in values[1:]],
                       [change(v, values[0], first["better"], tol) for v in values[1:]]))
    return out


def trend_charts(found: list[Row], labels: list[str]) -> list:
    """Each directed metric over the runs, a small chart apiece, twelve to a figure."""
    directed = [r for r in found if r.better is not None]
    with style():
        return [trend_chart(directed[start:start + TRENDS_PER_CHART], start, len(directed), labels)
                for start in range(0, len(directed), TRENDS_PER_CHART)]


def trend_chart(chunk: list[Row], start: int, total: int, labels: list[str]):
    rows = -(-len(chunk) // 4)
    fig, axes = figure(7.6, 1.8 * rows, rows=rows, cols=4)
    axes = np.atleast_1d(axes).ravel()
    for ax, row in zip(axes, chunk):
        colour = {"regressed": COLOURS["regressed"], "improved": COLOURS["improved"]}.get(row.verdicts[-1], ACCENT)
        ax.plot(range(len(row.values)), row.values, "o-", color=colour, ms=3)
        ax.set_title(f"{row.metric} ({row.better} better)", fontsize=7)
        ax.set_xticks(range(len(labels)), labels, fontsize=6)
        ax.tick_params(labelsize=6)
    for ax in axes[len(chunk):]:
        ax.set_visible(False)
    return draw(fig, f"trends {start + 1}-{start + len(chunk)} of {total}",
                "Each metric's value in each run, in the order given; red regressed and green improved in the last "
                "run against the first.")


def markdown(summary: dict, found: list[Row], labels: list[str]) -> str:
    lines = [f"### fluxgate compare: {labels[-1]} against {labels[0]}", "",
             f"**{summary['regressed']} regressed, {summary['improved']} improved, {summary['same']} within "
             f"tolerance** ({summary['info']} informational; tolerances of {summary['tolerances']})", ""]
    lines += [f"> {d}" for d in summary["differences"]]
    changed = [r for r in found if r.verdicts[-1] in ("regressed", "improved")]
    if changed:
        lines += ["", "| | metric | test | " + " | ".join(labels) + " | change |",
                  "|---|---|---|" + "---|" * len(labels) + "---|"]
        for r in sorted(changed, key=lambda r: r.verdicts[-1] != "regressed"):
            mark = "❌" if r.verdicts[-1] == "regressed" else "✅"
            cells = " | ".join(f"{v:.4g} {r.unit}".strip() for v in r.values)
            pct = f"{r.changes[-1]:+.1f}%" if r.changes[-1] is not None else "from 0"
            test = r.test.split("::")[-1].replace("|", "\\|")  # a pipe in a parameter would end the cell
            lines.append(f"| {mark} | `{r.metric}` | `{test}` | {cells} | {pct} |")
    return "\n".join(lines) + "\n"


def compare(paths: list[str], out: Path, profile_name: str | None = None) -> dict:
    runs = load(paths)
    reports = [r for _, r in runs]
    profile = profile_of(reports[-1], profile_name)
    found = rows(reports, profile)
    labels = [r["run"]["id"] for r in reports]
    first = Baseline(runs[0][0])
    differences = [f"{labels[i]}: {d}" for i, r in enumerate(reports[1:], 1)
                   for d in first.differences(r["target"]["spec"], r.get("baseline_target"), recorded_profile(r),
                                              r.get("environment", {}))]
    last = [r.verdicts[-1] for r in found]
    tolerances = f"profile {profile.name}" if profile.path else "the defaults (10%, and each metric's absolute " \
                                                                 "slack from the catalogue)"
    summary = {"tolerances": tolerances, "differences": differences, "metrics": len(found),
               "unshared": len({(t["nodeid"], m["name"]) for r in reports for t in r["tests"] for m in t["metrics"]})
               - len(found), **{v: last.count(v) for v in ("regressed", "improved", "same", "info")}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps({"runs": [{"path": str(p), "id": r["run"]["id"],
                                                            "target": r["target"]["spec"],
                                                            "verdict": r["run"]["verdict"]} for p, r in runs],
                                                  "summary": summary, "rows": [asdict(r) for r in found]},
                                                 indent=2))
    (out / "compare.md").write_text(markdown(summary, found, labels))
    bars = [(label(r.metric, r.better, r.test), r.changes[-1], r.verdicts[-1]) for r in found if r.better is not None]
    chart = change_chart(bars, f"{labels[-1]} against {labels[0]}: {len(bars)} metrics with a direction",
                         "Change in per cent (↓: lower is better, ↑: higher is better); red regressed past the "
                         "profile's tolerance, green improved past it, grey within it.")
    trends = trend_charts(found, labels) if len(runs) > 2 else []  # two runs: the change chart says it
    html = environment().get_template("compare.html.j2").render(
        runs=[r for _, r in runs], labels=labels, summary=summary, rows=found, change_chart=chart, trends=trends)
    (out / "compare.html").write_text(html)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_OR_REPORT", help="a run folder or its report.json")
    parser.add_argument("--out", default=".", help="where compare.html, .json and .md go (default: here)")
    parser.add_argument("--profile", help="whose tolerances judge the changes (default: the last run's)")
    args = parser.parse_args(argv)
    if len(args.runs) < 2:
        print(f"reports.compare: {len(args.runs)} run given; it compares two or more", file=sys.stderr)
        return 2
    try:
        summary = compare(args.runs, Path(args.out), args.profile)
    except (ValueError, KeyError, OSError) as e:  # KeyError: a report.json without a field every report has
        print(f"reports.compare: {f'a report lacks the field {e}' if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    print(f"{summary['regressed']} regressed, {summary['improved']} improved, {summary['same']} within tolerance, "
          f"{summary['info']} informational: {Path(args.out) / 'compare.html'}")
    return 1 if summary["regressed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
