"""Gates: threshold profiles (TOML) and baseline comparison turn recorded metrics into verdicts.

A profile holds what passes for one kind of run (the embedded CPU default, a GPU and model) and the
settings the suites read (sizes, run counts, concurrency), so that no test carries a number of its own.

Names in [thresholds] and [tolerances] are exact metric names or globs, matched as fnmatch does: anchored at
both ends, `*` spanning dots. So `"latency.*"` covers `latency.p99` but not `open_loop.latency.p99`, which
`"*latency.p99"` covers. An exact name wins; among globs, the longest (the most specific) does.

A profile may extend another (`extends = "cpu-tiny"`, or a path relative to its own file) and state only what
it changes: each setting, threshold, tolerance and metric it names replaces the other's, the rest is kept.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_type_hints

from harness.metrics import catalogue
from harness.metrics.catalogue import Definition
from harness.record import Metric
from harness.settings import NAMES, Settings
from harness.types import GenerationRequest

PROFILES = Path(__file__).parent / "profiles"
SCHEMA_MAJOR = 2  # a baseline from another major version of the report schema is refused
SECTIONS = ("name", "description", "extends", "require", "settings", "thresholds", "baseline", "tolerances",
            "metrics")
LEARNED = ("lpips", "clip_score", "fid", "cmmd")  # metrics whose weights a profile can require
TABLES = ("settings", "thresholds", "tolerances", "metrics", "baseline")  # what an extending profile merges


@dataclass(frozen=True)
class Tolerance:
    relative: float        # of the baseline's value
    absolute: float = 0.0  # in the metric's unit: room for metrics whose baseline is 0 or near it

    def slack(self, base: float) -> float:
        return self.absolute + self.relative * abs(base)


@dataclass
class Profile:
    name: str
    text: str = ""                      # the TOML as written: the report keeps it, with its hash
    path: str | None = None
    description: str = ""
    settings: Settings = field(default_factory=Settings)
    thresholds: dict[str, dict[str, Any]] = field(default_factory=dict)  # metric or glob -> min, max, optional
    tolerance: float = 0.10             # baseline, relative, where [tolerances] is silent
    tolerances: dict[str, dict[str, float]] = field(default_factory=dict)  # metric or glob -> relative, absolute
    metrics: list[Definition] = field(default_factory=list)  # metrics of one's own suites
    require: list[str] = field(default_factory=list)  # learned metrics whose missing weights fail the run

    @classmethod
    def load(cls, name_or_path: str) -> Profile:
        """A profile by name (harness/profiles/NAME.toml) or by path to a TOML file."""
        data, texts, path = _read(name_or_path, [])
        return cls.parse(data, text="\n".join(texts), path=str(path), default_name=path.stem)

    @classmethod
    def parse(cls, data: dict[str, Any], text: str = "", path: str | None = None,
              default_name: str = "profile") -> Profile:
        """Every section, key and value checked: a typo or a wrong type is a ValueError naming it (and the
        closest known key), never a setting silently left at its default or a gate that cannot fire."""
        where = f"profile {path or default_name}"

        def refuse(section: str, key: str, known: list[str]):
            close = catalogue.closest_of(key, known)
            hint = f"; did you mean {close!r}?" if close else ""
            raise ValueError(f"{where}: {section} {key!r} is not one fluxgate knows{hint}")

        def table(section: str, value: Any, fields: dict[str, tuple[type, ...]]):
            """A {field = value} table whose fields are known and of their types."""
            if not isinstance(value, dict):
                raise ValueError(f"{where}: {section} = {value!r}: give a table ({', '.join(fields)})")
            for field_, v in value.items():
                if field_ not in fields:
                    refuse(f"{section}: field", field_, list(fields))
                if not isinstance(v, fields[field_]) or isinstance(v, bool) and bool not in fields[field_]:
                    raise ValueError(f"{where}: {section}: {field_} = {v!r} must be "
                                     f"{' or '.join(t.__name__ for t in fields[field_])}")

        for key in data:
            if key not in SECTIONS:
                refuse("section", key, list(SECTIONS))
        for key in ("name", "description", "extends"):
            if not isinstance(data.get(key, ""), str):
                raise ValueError(f"{where}: {key} = {data[key]!r} must be a string")
        metrics = []
        for name, d in data.get("metrics", {}).items():
            table(f"[metrics] {name!r}", d, {"unit": (str,), "better": (str,)})
            if d.get("better") not in ("lower", "higher", None):
                raise ValueError(f"{where}: [metrics] {name!r}: better = {d['better']!r} must be 'lower' or 'higher'")
            metrics.append(Definition(name, d.get("unit", ""), d.get("better")))
        settings = data.get("settings", {})
        for key, value in settings.items():
            if key not in NAMES:
                refuse("[settings]", key, NAMES)
            _check_type(where, key, value)
        number = (int, float)
        thresholds = data.get("thresholds", {})
        for metric, bounds in thresholds.items():
            if not catalogue.known(metric, metrics):
                close = catalogue.closest(metric, metrics)
                hint = f"; did you mean {close!r}?" if close else ""
                raise ValueError(f"{where}: threshold {metric!r} matches no metric fluxgate records{hint} (a metric "
                                 "of your own suites goes in [metrics])")
            table(f"threshold {metric!r}", bounds, {"min": number, "max": number, "optional": (bool,)})
            if not {"min", "max"} & set(bounds):
                raise ValueError(f"{where}: threshold {metric!r} = {bounds!r}: give min and/or max (and optional = "
                                 "true for a metric a run may not record)")
        tolerances = {}
        for metric, value in data.get("tolerances", {}).items():
            if not catalogue.known(metric, metrics):
                refuse("[tolerances]", metric, [d.name for d in [*metrics, *catalogue.CATALOGUE]])
            value = {"relative": value} if isinstance(value, number) and not isinstance(value, bool) else value
            table(f"tolerance {metric!r}", value, {"relative": number, "absolute": number})
            tolerances[metric] = value
        baseline = data.get("baseline", {})
        table("[baseline]", baseline, {"tolerance": number})
        require = data.get("require", [])
        if not isinstance(require, list) or not all(isinstance(r, str) for r in require):
            raise ValueError(f"{where}: require = {require!r} must be a list of metric names ({', '.join(LEARNED)})")
        for name in require:
            if name not in LEARNED:
                refuse("require:", name, list(LEARNED))
        return cls(name=data.get("name", default_name), text=text, path=path,
                   description=data.get("description", ""), settings=Settings(**settings), thresholds=thresholds,
                   tolerance=baseline.get("tolerance", 0.10), tolerances=tolerances, metrics=metrics,
                   require=require)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def get(self, key: str) -> Any:
        """A suite setting: the profile's, or the default harness/settings.py gives it."""
        if key not in NAMES:
            raise KeyError(f"setting {key!r}: not in harness/settings.py")
        return getattr(self.settings, key)

    def request(self, prompt: str | list[str] = "a cat holding a sign", **fields) -> GenerationRequest:
        """A request at the profile's size and steps, seed 0, unless told otherwise."""
        size = self.settings.size
        defaults = {"height": size, "width": size, "num_inference_steps": self.settings.steps, "seed": 0}
        return GenerationRequest(prompt, **{**defaults, **fields})

    def threshold(self, metric: str) -> dict[str, float]:
        bounds = _lookup(self.thresholds, metric) or {}
        return {k: v for k, v in bounds.items() if k in ("min", "max")}

    def tolerance_for(self, metric: str) -> Tolerance:
        found = _lookup(self.tolerances, metric) or {}
        definition = catalogue.find(metric, self.metrics)
        return Tolerance(found.get("relative", self.tolerance),
                         found.get("absolute", definition.absolute if definition else 0.0))

    def unmatched(self, recorded: set[str], ran: set[str]) -> list[str]:
        """Thresholds no recorded metric met, among those of the categories that ran (a metric of one's own
        counts wherever it runs), bar those marked optional: gates that could not fire."""
        return [pattern for pattern, bounds in self.thresholds.items()
                if not bounds.get("optional") and not any(fnmatch.fnmatchcase(name, pattern) for name in recorded)
                and (ran & catalogue.categories(pattern) or not catalogue.categories(pattern))]

    def describe(self) -> dict[str, Any]:
        """What the report keeps of the profile: enough to know exactly what gated the run."""
        return {"name": self.name, "path": self.path, "sha256": self.sha256, "content": self.text,
                "settings": dataclasses.asdict(self.settings), "unmatched": []}


def _check_type(where: str, key: str, value: Any) -> None:
    """A setting of the default's type (an int where a float is due is fine; a list's items too)."""
    default = getattr(Settings(), key)
    item = get_args(get_type_hints(Settings)[key])  # a list's item type, for an empty default

    def fits(v: Any, like: Any) -> bool:
        if isinstance(like, list):
            return isinstance(v, list) and all(fits(x, like[0] if like else item[0]()) for x in v)
        kinds = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}
        return isinstance(v, kinds.get(type(like), (int, float))) and isinstance(v, bool) == isinstance(like, bool)

    if not fits(value, default):
        raise ValueError(f"{where}: [settings] {key} = {value!r}: must be {type(default or 0.0).__name__} like "
                         f"the default {default!r}")


def _lookup(table: dict[str, Any], metric: str) -> Any:
    """Exact name first, then the longest glob that matches (file order breaks ties)."""
    if metric in table:
        return table[metric]
    globs = [k for k in table if fnmatch.fnmatchcase(metric, k)]
    return table[max(globs, key=len)] if globs else None


def _read(name_or_path: str, seen: list[Path]) -> tuple[dict[str, Any], list[str], Path]:
    """The TOML of a profile merged over the one it extends, the texts of both (the report keeps what gated
    the run, all of it), and its path."""
    path = Path(name_or_path) if name_or_path.endswith(".toml") else PROFILES / f"{name_or_path}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILES.glob("*.toml")))
        raise ValueError(f"profile {name_or_path!r}: no such profile (known: {known}; or a path to a .toml)")
    if path.resolve() in seen:
        raise ValueError(f"profile {seen[0]}: extends itself by way of {path}")
    text = path.read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"profile {path}: not valid TOML: {e}") from None
    base = data.get("extends")
    if not isinstance(base, str):
        return data, [text], path
    if base.endswith(".toml") and not Path(base).is_absolute():
        base = str(path.parent / base)
    under, texts, _ = _read(base, [*seen, path.resolve()])
    merged = {k: v for k, v in data.items() if k != "extends"}  # its own name and description, not the other's
    for table in TABLES:
        if isinstance(data.get(table, {}), dict):  # else parse() refuses it as it stands
            merged[table] = {**under.get(table, {}), **data.get(table, {})}
    return merged, [text, *texts], path


class Baseline:
    """The metrics of an earlier report.json, by (test, metric), and what they were measured on."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            report = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"baseline {str(path)!r}: cannot read a report.json there ({e})") from None
        version = str(report.get("schema_version", "0"))
        if int(version.split(".")[0]) != SCHEMA_MAJOR:
            raise ValueError(f"baseline {str(path)!r}: schema_version {version} is not {SCHEMA_MAJOR}.x")
        self.report = report
        self.run_id = report["run"]["id"]
        self.values = {(t["nodeid"], m["name"]): m["value"] for t in report["tests"] for m in t["metrics"]}

    def get(self, nodeid: str, metric: str) -> float | None:
        return self.values.get((nodeid, metric))

    def differences(self, spec: str, baseline_target: str | None, profile: Profile,
                    environment: dict[str, Any]) -> list[str]:
        """What makes this run incomparable with the baseline's: another target (or target to measure speed-up
        against), profile or hardware."""
        theirs, out = self.report, []
        if theirs["target"]["spec"] != spec:
            out.append(f"target {spec!r} (the baseline's: {theirs['target']['spec']!r})")
        if theirs.get("baseline_target") != baseline_target:
            out.append(f"baseline target {baseline_target!r} (the baseline's: {theirs.get('baseline_target')!r})")
        if theirs["profile"]["name"] != profile.name:
            out.append(f"profile {profile.name!r} (the baseline's: {theirs['profile']['name']!r})")
        ours, defaults = dataclasses.asdict(profile.settings), dataclasses.asdict(Settings())
        for key, value in ours.items():
            if key not in theirs["profile"]["settings"] and value == defaults[key]:
                continue  # a setting newer than the baseline's fluxgate, left at its default
            if theirs["profile"]["settings"].get(key) != value:
                out.append(f"setting {key}={value!r} (the baseline's: {theirs['profile']['settings'].get(key)!r})")
        for key in HARDWARE:
            mine, base = HARDWARE[key](environment), HARDWARE[key](theirs["environment"])
            if mine != base:
                out.append(f"{key} {mine!r} (the baseline's: {base!r})")
        return out


HARDWARE = {  # what a timing depends on
    "CPU": lambda env: env.get("cpu"),
    "CPU count": lambda env: env.get("cpu_count"),
    "GPUs": lambda env: [g.get("name") for g in env.get("gpus", [])],
}


def change(value: float, base: float, better: str | None, tol: Tolerance) -> str:
    """How VALUE stands against BASE: "regressed" or "improved" past the tolerance's slack in the direction
    BETTER says, else "same"; "info" for a metric with no direction."""
    if better is None:
        return "info"
    gain = (base - value) if better == "lower" else (value - base)
    slack = tol.slack(base)
    return "regressed" if gain < -slack else "improved" if gain > slack else "same"


def judge(metric: Metric, nodeid: str, profile: Profile, baseline: Baseline | None) -> Metric:
    """Set the metric's verdict from the profile's threshold and the baseline; returns the metric.

    A percentile from fewer samples than it needs (metric.min_n) is reported, marked, and not gated.
    """
    reasons = []
    bounds = metric.threshold = profile.threshold(metric.name)
    base = metric.baseline = baseline.get(nodeid, metric.name) if baseline is not None else None
    if metric.n is not None and metric.min_n is not None and metric.n < metric.min_n:
        metric.note = f"not gated: {metric.n} samples, and this percentile needs {metric.min_n} to be bounded"
        metric.reasons, metric.verdict = [], "none"
        return metric
    if "min" in bounds and not metric.value >= bounds["min"]:
        reasons.append(f"{metric.name} = {metric.value:.4g}{metric.unit} is below the minimum {bounds['min']:.4g}")
    if "max" in bounds and not metric.value <= bounds["max"]:
        reasons.append(f"{metric.name} = {metric.value:.4g}{metric.unit} is above the maximum {bounds['max']:.4g}")
    gated = bool(bounds)
    if base is not None and metric.better is not None:
        gated = True
        tol = profile.tolerance_for(metric.name)
        if change(metric.value, base, metric.better, tol) == "regressed":
            reasons.append(f"{metric.name} = {metric.value:.4g}{metric.unit} regressed from the baseline's "
                           f"{base:.4g} by more than {tol.relative:.0%} + {tol.absolute:g}{metric.unit} "
                           f"({metric.better} is better)")
    metric.reasons = reasons
    metric.verdict = "fail" if reasons else "pass" if gated else "none"
    return metric


def failure(reasons: list[str]) -> str:
    """The failure of a test that passed but for its gates: their reasons."""
    return "gate failed:\n  " + "\n  ".join(reasons)
