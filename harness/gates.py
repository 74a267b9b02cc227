"""Gates: threshold profiles (TOML) and baseline comparison turn recorded metrics into verdicts.

A profile holds what passes for one kind of run (the embedded CPU default, a GPU and model) and the
settings the suites read (sizes, run counts, concurrency), so that no test carries a number of its own.
"""
from __future__ import annotations

import fnmatch
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.record import Metric

PROFILES = Path(__file__).parent / "profiles"
SCHEMA_MAJOR = 1  # a baseline from another major version of the report schema is refused


@dataclass
class Profile:
    name: str
    description: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)   # metric (or glob) -> min / max
    tolerance: float = 0.10                                                 # baseline, relative
    tolerances: dict[str, float] = field(default_factory=dict)              # per metric (or glob)

    @classmethod
    def load(cls, name_or_path: str) -> Profile:
        """A profile by name (harness/profiles/NAME.toml) or by path to a TOML file."""
        path = Path(name_or_path) if name_or_path.endswith(".toml") else PROFILES / f"{name_or_path}.toml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in PROFILES.glob("*.toml")))
            raise ValueError(f"profile {name_or_path!r}: no such profile (known: {known}; or a path to a .toml)")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"profile {path}: not valid TOML: {e}") from None
        for metric, bounds in data.get("thresholds", {}).items():
            if not isinstance(bounds, dict) or not bounds or set(bounds) - {"min", "max"}:
                raise ValueError(f"profile {path}: threshold {metric!r} = {bounds!r}: give min and/or max")
        return cls(name=data.get("name", path.stem), description=data.get("description", ""),
                   settings=data.get("settings", {}), thresholds=data.get("thresholds", {}),
                   tolerance=data.get("baseline", {}).get("tolerance", 0.10),
                   tolerances=data.get("tolerances", {}))

    def get(self, key: str, default: Any = None) -> Any:
        """A suite setting; the default applies where the profile is silent."""
        return self.settings.get(key, default)

    def threshold(self, metric: str) -> dict[str, float]:
        return _lookup(self.thresholds, metric) or {}

    def tolerance_for(self, metric: str) -> float:
        found = _lookup(self.tolerances, metric)
        return self.tolerance if found is None else found


def _lookup(table: dict[str, Any], metric: str) -> Any:
    """Exact name first, then the first glob that matches."""
    if metric in table:
        return table[metric]
    return next((v for k, v in table.items() if fnmatch.fnmatchcase(metric, k)), None)


class Baseline:
    """The metrics of an earlier report.json, by (test, metric)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            report = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"baseline {str(path)!r}: cannot read a report.json there ({e})") from None
        version = str(report.get("schema_version", "0"))
        if int(version.split(".")[0]) != SCHEMA_MAJOR:
            raise ValueError(f"baseline {str(path)!r}: schema_version {version} is not {SCHEMA_MAJOR}.x")
        self.run_id = report["run"]["id"]
        self.values = {(t["nodeid"], m["name"]): m["value"] for t in report["tests"] for m in t["metrics"]}

    def get(self, nodeid: str, metric: str) -> float | None:
        return self.values.get((nodeid, metric))


def judge(metric: Metric, nodeid: str, profile: Profile, baseline: Baseline | None) -> Metric:
    """Set the metric's verdict from the profile's threshold and the baseline; returns the metric."""
    reasons = []
    bounds = metric.threshold = profile.threshold(metric.name)
    if "min" in bounds and not metric.value >= bounds["min"]:
        reasons.append(f"{metric.name} = {metric.value:.4g}{metric.unit} is below the minimum {bounds['min']:.4g}")
    if "max" in bounds and not metric.value <= bounds["max"]:
        reasons.append(f"{metric.name} = {metric.value:.4g}{metric.unit} is above the maximum {bounds['max']:.4g}")
    gated = bool(bounds)
    if baseline is not None and metric.better is not None:
        base = metric.baseline = baseline.get(nodeid, metric.name)
        if base is not None:
            gated = True
            tol = profile.tolerance_for(metric.name)
            slack = abs(base) * tol
            worse = metric.value > base + slack if metric.better == "lower" else metric.value < base - slack
            if worse:
                reasons.append(f"{metric.name} = {metric.value:.4g}{metric.unit} regressed from the baseline's "
                               f"{base:.4g} by more than {tol:.0%} ({metric.better} is better)")
    metric.reasons = reasons
    metric.verdict = "fail" if reasons else "pass" if gated else "none"
    return metric
