"""The report's charts: matplotlib figures drawn as SVG and inlined as data URIs, so the page stays one file,
prints sharp and runs no script. Each chart reads what one test recorded (its metrics, or an artifact the test
wrote for it) and links back to that test; a test that recorded nothing chartable gets no chart.

    by_test = charts(report, run_dir)   # nodeid -> [Chart]; change_chart(rows) for a baseline or a comparison
"""
from __future__ import annotations

import base64
import fnmatch
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

COLOURS = {"pass": "#1f8a4c", "fail": "#c62828", "none": "#7a8290", "improved": "#1f8a4c",
           "regressed": "#c62828", "same": "#7a8290", "info": "#b0b6c2"}
INK, ACCENT, SECOND = "#1d2330", "#2a5db0", "#d9822b"
STYLE = {"svg.fonttype": "none",      # text stays text, not outlines: smaller, and searchable in the page
         "text.parse_math": False,    # a test id or metric name with $...$ in it is text, not TeX
         "svg.hashsalt": "fluxgate",  # the same data draws the same file
         "font.size": 9, "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
         "grid.color": "#e3e6ee", "axes.axisbelow": True, "axes.edgecolor": "#9aa1ad", "axes.titlesize": 10}


@dataclass
class Chart:
    title: str
    uri: str            # data:image/svg+xml;base64,...
    caption: str = ""


Drawer = Callable[[object, dict], Chart | None]   # (the artifact's data, the test) -> a chart
ARTIFACTS: dict[str, Drawer] = {}                  # artifact name (a glob) -> its drawer


def artifact(pattern: str):
    def register(fn: Drawer) -> Drawer:
        ARTIFACTS[pattern] = fn
        return fn
    return register


def style():
    """The house style, for making a chart's parts as well as for drawing them (text takes its size when made)."""
    import matplotlib

    return matplotlib.rc_context(STYLE)


def figure(width: float = 6.4, height: float = 3.0, rows: int = 1, cols: int = 1):
    from matplotlib.figure import Figure  # not pyplot: no figure manager to fill up, no GUI backend

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(rows, cols)


def draw(fig, title: str, caption: str = "") -> Chart:
    with style():
        buffer = io.BytesIO()
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    return Chart(title, "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode(), caption)


def values(test: dict) -> dict[str, dict]:
    return {m["name"]: m for m in test["metrics"]}


def charts(report: dict, run_dir: Path) -> dict[str, list[Chart]]:
    """Every chart the run's tests support, by the nodeid of the test they come from."""
    out: dict[str, list[Chart]] = {}
    with style():
        for test in report["tests"]:
            found = [attempt(ramp, test), attempt(ablation, test)]
            for a in test["artifacts"]:
                drawer = next((fn for pattern, fn in ARTIFACTS.items() if fnmatch.fnmatchcase(a["name"], pattern)),
                              None)
                path = run_dir / a["path"]
                if drawer and path.is_file():
                    found.append(attempt(lambda: drawer(json.loads(path.read_text()), test)))
            if any(found):
                out[test["nodeid"]] = [c for c in found if c]
    return out


def attempt(fn: Callable, *args) -> Chart | None:
    """A chart, or None where its data is not in the shape it draws (an artifact of an older fluxgate, a hand-made
    report): a chart is never worth a report lost."""
    try:
        return fn(*args)
    except (KeyError, TypeError, ValueError, IndexError):
        return None


def span(metric: dict) -> str:
    """A statistic's sample count and interval, as the report states them beside it."""
    low, high = (metric.get("interval") or [None, None])
    interval = f", 90% [{low:.3g}, {high:.3g}]" if low is not None and high is not None else ""
    return f"n={metric['n']}{interval}" if metric.get("n") else ""


@artifact("latency-samples")
def latency_distribution(samples: list[float], test: dict) -> Chart:
    m = values(test)
    fig, ax = figure(5.2, 3.0)
    xs = np.sort(samples)
    ax.step(xs, np.arange(1, len(xs) + 1) / len(xs), where="post", color=ACCENT, label="empirical CDF")
    ax.plot(xs, np.arange(1, len(xs) + 1) / len(xs), "o", color=ACCENT, ms=3)
    for q, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
        if f"latency.{q}" in m:
            ax.axvline(m[f"latency.{q}"]["value"], color=SECOND, ls=style, lw=1,
                       label=f"{q} {m[f'latency.{q}']['value']:.4g} s ({span(m[f'latency.{q}'])})")
    ax.set(xlabel="latency (s)", ylabel="share of requests", ylim=(0, 1.05))
    ax.legend(fontsize=8, loc="lower right")
    return draw(fig, f"warm latency, {len(xs)} requests",
                "Each sequential request's end-to-end latency; the percentiles with their sample counts and "
                "90% intervals (a percentile from too few samples is reported, not gated).")


@artifact("scaling-*")
def scaling(data: dict, test: dict) -> Chart:
    dimension = test["nodeid"].partition("[")[2].rstrip("]") or "scaling"
    m = values(test)
    slope, r2 = (m.get(f"scaling.{dimension}.{k}", {}).get("value") for k in ("slope", "r2"))
    xs, ys = np.asarray(data["x"], float), np.asarray(data["seconds"], float)
    fig, ax = figure(4.6, 3.0)
    ax.plot(xs, ys, "o", color=ACCENT, label="median latency")
    if len(xs) > 1:
        fit = np.polyfit(xs, ys, 1)
        grid = np.linspace(0, xs.max() * 1.05, 50)
        ax.plot(grid, np.polyval(fit, grid), color=SECOND, lw=1, label="least-squares line")
    label = {"resolution": "megapixels", "steps": "denoising steps", "batch": "images per request"}.get(dimension,
                                                                                                      dimension)
    ax.set(xlabel=label, ylabel="seconds", xlim=(0, None), ylim=(0, None))
    ax.legend(fontsize=8)
    stated = f": slope {slope:.3g} {data.get('unit', '')}, r² {r2:.3f}" if slope is not None and r2 is not None else ""
    return draw(fig, f"latency against {dimension}{stated}",
                "The median of each point's runs, and the line fitted through them.")


def ramp(test: dict) -> Chart | None:
    m = values(test)
    levels = sorted({int(g) for g in (re.fullmatch(r"ramp\.c(\d+)\.throughput", k) for k in m) if g
                     for g in g.groups()})
    if not levels:
        return None
    fig, (left, right) = figure(7.2, 3.0, cols=2)
    left.plot(levels, [m[f"ramp.c{c}.throughput"]["value"] for c in levels], "o-", color=ACCENT)
    left.set(xlabel="requests in flight", ylabel="images/s", title="throughput", ylim=(0, None))
    for q, colour in (("p50", ACCENT), ("p99", SECOND)):
        points = [(c, m[f"ramp.c{c}.latency.{q}"]) for c in levels if f"ramp.c{c}.latency.{q}" in m]
        if not points:
            continue
        counts = sorted({p.get("n") or 0 for _, p in points})
        right.plot([c for c, _ in points], [p["value"] for _, p in points], "o-", color=colour,
                   label=f"{q} (n={counts[0]} per level)" if len(counts) == 1 else
                   f"{q} (n={'/'.join(str(p.get('n') or 0) for _, p in points)})")
    right.set(xlabel="requests in flight", ylabel="seconds", title="latency", ylim=(0, None))
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(c) for c in levels])
    return draw(fig, "concurrency ramp", "A closed loop at each level; n is the number of answers behind each "
                                         "percentile (a p99 from few samples is close to the maximum).")


@artifact("open-loop")
def open_loop(data: dict, test: dict) -> Chart:
    t = data["timeline"]
    fig, ax = figure()
    rows = list(zip(t["scheduled"], t["sent"], t["done"], t["kind"]))
    ok = [(s, d - s) for s, _, d, k in rows if k == "ok"]
    ax.plot([s for s, _ in ok], [lat for _, lat in ok], "o", ms=4, color=ACCENT, label="answered (latency from "
                                                                                         "the schedule)")
    late = [(s, (d if d is not None else s) - s) for s, sent, d, _ in rows
            if sent is None or sent - s > t["slack"]]
    if late:
        ax.plot(*zip(*late), "x", color=COLOURS["fail"], ms=7, label=f"late send ({len(late)})")
    other = [(s, d - s) for s, _, d, k in rows if k != "ok" and d is not None]
    if other:
        ax.plot(*zip(*other), "s", color=COLOURS["none"], ms=4, label=f"refused or failed ({len(other)})")
    ax.set(xlabel="scheduled send (s from start)", ylabel="latency (s)", ylim=(0, None))
    ax.legend(fontsize=8)
    return draw(fig, f"open loop at {data['offered_rate']:.3g}/s offered, {data['throughput']:.3g}/s served, "
                     f"{data['late_fraction']:.1%} late",
                f"{data['requests']} requests sent on schedule, whatever the answers; a send more than its slack "
                f"({t['slack'] * 1e3:.1f} ms) behind schedule is late, and more than 1% late (and more than "
                "one) voids the run.")


@artifact("capacity-steps")
def capacity(steps: list[dict], test: dict) -> Chart:
    offered = [s["offered_rate"] for s in steps]
    bounded = "p99_bound" in steps[0]  # the latency-bounded capacity: each step's p99 against the profile's bound
    fig, axes = figure(10.2 if bounded else 7.2, 3.0, cols=3 if bounded else 2)
    left, right = axes[:2]
    top = max(offered + [s["throughput"] for s in steps]) * 1.1
    left.plot([0, top], [0, top], color="#c5cad4", lw=1, label="served = offered")
    left.plot(offered, [s["throughput"] for s in steps], "o-", color=ACCENT, label="served")
    shed = [s["offered_rate"] for s in steps if s["overloaded"]]
    if shed:
        left.axvline(shed[0], color=COLOURS["fail"], ls="--", lw=1, label=f"first shed at {shed[0]:.3g}/s")
    left.set(xlabel="offered (requests/s)", ylabel="served (images/s)", title="offered against served",
             xlim=(0, top), ylim=(0, top))
    left.legend(fontsize=8)
    late = [100 * s["late_fraction"] for s in steps]
    right.bar(range(len(steps)), late, color=[COLOURS["fail"] if not s["valid"] else ACCENT for s in steps])
    for i, share in enumerate(late):  # a zero is an answer too: say it
        right.annotate(f"{share:.1f}%", (i, share), ha="center", va="bottom", fontsize=7.5,
                       xytext=(0, 2), textcoords="offset points")
    right.axhline(1, color=COLOURS["fail"], ls=":", lw=1)
    right.set_xticks(range(len(steps)), [f"{r:.3g}" for r in offered])
    right.set(xlabel="offered (requests/s)", ylabel="late sends (%)", title="late-send share (1% voids a step)")
    if bounded:
        bound, p99 = axes[2], [(s["latency"] or {}).get("p99") for s in steps]
        bound.plot([r for r, p in zip(offered, p99) if p is not None], [p for p in p99 if p is not None], "o-",
                   color=ACCENT, label="p99 (its samples: the step's answers)")
        bound.axhline(steps[0]["p99_bound"], color=COLOURS["fail"], ls="--", lw=1,
                      label=f"bound {steps[0]['p99_bound']:g} s")
        bound.set(xlabel="offered (requests/s)", ylabel="p99 latency (s)", title="p99 against the bound")
        bound.legend(fontsize=8)
    return draw(fig, "highest sustained rate", "Open-loop steps at rising rates, each judged on its own; the "
                "highest served in full with p99 under the bound is MLPerf Server's capacity.")


@artifact("engines")
def engines(runs: dict[str, list[dict]], test: dict) -> Chart:
    fig, (late, latency) = figure(7.2, 3.2, cols=2)
    rates = [s["offered_rate"] for s in next(iter(runs.values()))]
    at = np.arange(len(rates))  # the rates double or so from step to step: evenly spaced, each named
    for (name, steps), colour in zip(runs.items(), (ACCENT, SECOND)):
        late.plot(at, [100 * s["late_fraction"] for s in steps], "o-", color=colour, label=f"{name}: late")
        late.plot(at, [100 * s["timeout"] / max(s["requests"], 1) for s in steps], "x:", color=colour,
                  label=f"{name}: unanswered")
        for q, style in (("p50", "o-"), ("p99", "s--")):
            points = [(x, s["latency"][q]) for x, s in zip(at, steps) if s["latency"]]
            if points:
                latency.plot(*zip(*points), style, color=colour, label=f"{name} {q}")
    late.axhline(1, color=COLOURS["fail"], ls=":", lw=1)
    late.set(xlabel="offered (requests/s)", ylabel="share of sends (%)", title="late and unanswered")
    latency.set(xlabel="offered (requests/s)", ylabel="latency (s)", title="the same server, as each measured it")
    for ax in (late, latency):
        ax.set_xticks(at, [f"{r:g}" for r in rates])
        ax.legend(fontsize=7.5)
    return draw(fig, "load engines side by side", "fluxgate's threads and Locust's workers at the same rates, "
                "taking turns against the same target; latency from each request's schedule.")


@artifact("memory-samples")
def memory(data: dict, test: dict) -> Chart:
    m = values(test)
    fig, ax = figure()
    ax.plot(data["seconds"], data["host_mib"], color=ACCENT, lw=1.2, label="host RSS")
    if any(d is not None for d in data["device_mib"]):
        ax.plot(data["seconds"], [d if d is not None else np.nan for d in data["device_mib"]], color=SECOND,
                lw=1.2, label="device")
    low = min(data["host_mib"])
    ax.plot(data["answered"], [low] * len(data["answered"]), "|", color=INK, ms=8,
            label=f"answers ({len(data['answered'])})")
    ax.set(xlabel="seconds under load", ylabel="MiB")
    ax.legend(fontsize=8)
    slope = m.get("memory.host_per_request", {}).get("value")
    stated = f": {slope:.3g} MiB kept per request" if slope is not None else ""
    return draw(fig, f"memory under sustained load{stated}",
                "Resident memory sampled every 50 ms while two requests were kept in flight; a leak is the slope of "
                "memory against answers, whatever their rate.")


def ablation_rows(metrics: list[dict]) -> dict[str, dict[str, dict]]:
    """Row -> field -> metric, from the metrics named ablation.<row>.<field> (a row's options may hold dots:
    cache=0.1), in the order they were recorded."""
    rows: dict[str, dict[str, dict]] = {}
    for m in (m for m in metrics if m["name"].startswith("ablation.")):
        row, _, name = m["name"].removeprefix("ablation.").rpartition(".")
        rows.setdefault(row, {})[name] = m
    return rows


def error_bars(estimates: list[dict]) -> list[list[float]]:
    """matplotlib's xerr from each estimate's interval: the distance down and up, 0 for an unbounded side."""
    sides = [e.get("interval") or [None, None] for e in estimates]
    return [[e["value"] - low if low is not None else 0 for e, (low, _) in zip(estimates, sides)],
            [high - e["value"] if high is not None else 0 for e, (_, high) in zip(estimates, sides)]]


def ablation(test: dict) -> Chart | None:
    rows = {k: v for k, v in ablation_rows(test["metrics"]).items() if "speedup" in v}
    if not rows:
        return None
    names = list(rows)
    fig, (left, right) = figure(7.2, 0.9 + 0.35 * len(names), cols=2)
    speed = [rows[r]["speedup"] for r in names]
    bars = error_bars(speed)
    left.barh(names, [s["value"] for s in speed], xerr=bars if any(map(any, bars)) else None, color=ACCENT,
              capsize=3)
    left.axvline(1, color=INK, lw=0.8)
    left.set(xlabel="speed-up (x)", title="speed")
    left.invert_yaxis()
    psnr = [rows[r].get("psnr", {}) for r in names]
    right.barh(range(len(names)), [min(p.get("value", np.nan), 100) for p in psnr],
               color=[COLOURS[p.get("verdict", "none")] for p in psnr])
    right.set(xlabel="PSNR (dB)", title="quality")
    right.set_yticks(range(len(names)), [""] * len(names))
    right.invert_yaxis()
    return draw(fig, "ablation: each option against the plain pipeline",
                "Speed-up: the median of paired ratios against the plain pipeline, with its 90% interval (no "
                "whisker where too few samples bound it). Quality: PSNR of the row's image against the plain "
                "pipeline's (identical drawn at 100 dB), coloured by its gate.")


def change_chart(rows: list[tuple[str, float, str]], title: str, caption: str = "") -> Chart | None:
    """Horizontal bars of per-cent change, one per (label, change %, verdict), coloured by verdict; a change that
    is not a number (a NaN metric) has no bar."""
    rows = [r for r in rows if r[1] is not None and np.isfinite(r[1])]
    if not rows:
        return None
    with style():
        rows = sorted(rows, key=lambda r: -abs(r[1]))
        fig, ax = figure(9.0, 0.8 + 0.2 * len(rows))
        shown = np.clip([r[1] for r in rows], -200, 200)  # a change past 200% is drawn at the edge, labelled
        ax.barh(range(len(rows)), shown, color=[COLOURS[r[2]] for r in rows])
        ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=7)
        for i, (_, change, _) in enumerate(rows):
            ax.annotate(f"{change:+.1f}%", (shown[i], i), fontsize=6.5, va="center",
                        xytext=(3 if shown[i] >= 0 else -3, 0), textcoords="offset points",
                        ha="left" if shown[i] >= 0 else "right")
        ax.axvline(0, color=INK, lw=0.8)
        ax.invert_yaxis()
        low, high = min(shown.min(), 0), max(shown.max(), 0)
        pad = 0.2 * max(high - low, 1)  # room for the labels beside the longest bars
        ax.set(xlabel="change (%)", xlim=(low - pad if low < 0 else -pad / 4, high + pad))
        return draw(fig, title, caption)


def percent(value: float, base: float) -> float | None:
    """VALUE's change from BASE in per cent; None from a base of 0."""
    return 100 * (value - base) / abs(base) if base else None


def label(metric: str, better: str | None, nodeid: str) -> str:
    """A bar's name: the metric, which way is better, the test."""
    return f"{metric} {'↓' if better == 'lower' else '↑'} · {nodeid.split('::')[-1]}"


def baseline_chart(report: dict) -> Chart | None:
    """Each metric with a baseline and a direction: its change in per cent, red where it failed its gate, green
    where it moved the better way, grey where it moved the worse way within tolerance."""
    rows = []
    for t in report["tests"]:
        for m in (m for m in t["metrics"] if m["baseline"] not in (None, 0) and m["better"] is not None):
            change = percent(m["value"], m["baseline"])
            if not np.isfinite(change):
                continue  # a NaN metric: no change to draw
            better = change < 0 if m["better"] == "lower" else change > 0
            rows.append((label(m["name"], m["better"], t["nodeid"]), change,
                         "regressed" if m["verdict"] == "fail" else "improved" if better else "same"))
    return change_chart(rows, f"against the baseline: {len(rows)} metrics",
                        "Change from the baseline's value (↓: lower is better, ↑: higher is better). Red failed "
                        "its gate; green moved the better way; grey moved the worse way, within tolerance.")
