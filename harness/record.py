"""What a run records: metrics, images and artifacts per test, and the run they belong to.

A test records through its Recorder; the plugin moves the recording onto the test's report (user_properties,
which pytest-xdist carries from workers to the controller), where the Run collects it. So a parallel run
reports the same way as a serial one.
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from harness.stats import Estimate, quantile

Better = Literal["lower", "higher"] | None
PROPERTY = "fluxgate"  # the user_properties key a recording travels under


@dataclass
class Metric:
    name: str
    value: float
    unit: str = ""
    better: Better = None                   # which direction is an improvement; None: informational
    verdict: str = "none"                   # pass | fail | none (no gate applies)
    reasons: list[str] = field(default_factory=list)
    threshold: dict[str, float] = field(default_factory=dict)   # min / max from the profile
    baseline: float | None = None           # the same metric in the baseline report
    n: int | None = None                    # samples behind it (a percentile, a median)
    interval: list[float | None] | None = None  # its confidence interval (harness.stats); None: unbounded side
    min_n: int | None = None                # samples it needs before it is gated
    note: str | None = None                 # why it was not gated


@dataclass
class Recording:
    metrics: list[Metric] = field(default_factory=list)
    images: list[dict[str, str]] = field(default_factory=list)     # name, path (relative to the run dir), caption
    artifacts: list[dict[str, str]] = field(default_factory=list)  # name, path
    notes: list[str] = field(default_factory=list)
    comparisons: list[dict[str, Any]] = field(default_factory=list)  # Recorder.comparison()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recording:
        return cls(metrics=[Metric(**m) for m in d["metrics"]], images=d["images"], artifacts=d["artifacts"],
                   notes=d.get("notes", []), comparisons=d.get("comparisons", []))


def slug(nodeid: str) -> str:
    """A file-system-safe name for a test."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[:150]


class Recorder:
    """What one test records. The `recorder` fixture hands each test its own."""

    def __init__(self, nodeid: str, run_dir: Path):
        self.nodeid = nodeid
        self.run_dir = run_dir
        self.recording = Recording()

    def metric(self, name: str, value: float, unit: str = "", better: Better = None, n: int | None = None) -> Metric:
        """Record one number. `better` ("lower" or "higher") makes it comparable with a baseline; `n`, the samples
        it sums up (a mean over n prompts), lets the shards' values of a test merge (reports/merge.py)."""
        if better not in ("lower", "higher", None):
            raise ValueError(f"better={better!r}: must be 'lower', 'higher' or None")
        value = float(value)
        metric = Metric(name, value, unit, better, n=n)
        self.recording.metrics.append(metric)
        return metric

    def metrics(self, prefix: str, values: dict[str, float], unit: str = "", better: Better = None,
                n: int | None = None) -> None:
        """Several metrics under one prefix: prefix.key for each key."""
        for key, value in values.items():
            self.metric(f"{prefix}.{key}", value, unit, better, n)

    def estimate(self, name: str, estimate: Estimate, unit: str = "", better: Better = None) -> Metric:
        """A statistic with its sample count and interval; gated only once it has the samples it needs."""
        metric = self.metric(name, estimate.value, unit, better)
        metric.n, metric.interval, metric.min_n = estimate.n, estimate.interval, estimate.min_n
        return metric

    def percentiles(self, prefix: str, samples: list[float], unit: str = "s", better: Better = "lower") -> None:
        """prefix.p50, .p95, .p99 of the samples, each with its count and order-statistic interval."""
        for q in (50, 95, 99):
            self.estimate(f"{prefix}.p{q}", quantile(samples, q / 100), unit, better)

    def image(self, name: str, image: np.ndarray, caption: str | None = None) -> Path:
        """Save a uint8 (H, W, 3) image as PNG beside the report; the caption (a prompt) is shown under it."""
        path = self._png(name, image)
        self.recording.images.append({"name": name, "path": str(path.relative_to(self.run_dir)),
                                      **({"caption": caption} if caption is not None else {})})
        return path

    def comparison(self, name: str, ours: np.ndarray, theirs: np.ndarray, prompt: str | None = None,
                   metrics: dict[str, float] | None = None) -> dict[str, Any]:
        """The target's image, the reference's and their difference as a heat-map, for the report's gallery,
        with the prompt and the metrics of this pair. The difference is amplified so that its largest value is
        full scale (`gain`), and black where the two are equal to the bit."""
        ours, theirs = (np.asarray(im, dtype=np.uint8) for im in (ours, theirs))
        diff = np.abs(ours.astype(np.int16) - theirs.astype(np.int16)).max(axis=-1)
        gain = 255 / max(int(diff.max()), 1)
        paths = {role: str(self._png(f"{name}-{role}", im).relative_to(self.run_dir))
                 for role, im in (("target", ours), ("reference", theirs), ("difference", heat_map(diff * gain)))}
        entry = {"name": name, "prompt": prompt, **paths, "max_diff": int(diff.max()), "gain": gain,
                 "metrics": {k: float(v) for k, v in (metrics or {}).items()}}
        self.recording.comparisons.append(entry)
        return entry

    def artifact(self, name: str, data: str | bytes | dict | list) -> Path:
        """Save text, bytes or JSON beside the report (a NAME with a suffix keeps it: "features.npz")."""
        suffix = "" if Path(name).suffix else ".json" if isinstance(data, (dict, list)) else \
            ".txt" if isinstance(data, str) else ".bin"
        path = self._path(name, suffix)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data if isinstance(data, str) else json.dumps(data, indent=2, default=str))
        self.recording.artifacts.append({"name": name, "path": str(path.relative_to(self.run_dir))})
        return path

    def note(self, text: str) -> None:
        """A sentence the report shows beside the test (e.g. how concurrency was simulated)."""
        self.recording.notes.append(text)

    def _png(self, name: str, image: np.ndarray) -> Path:
        from PIL import Image

        path = self._path(name, ".png")
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(path)
        return path

    def _path(self, name: str, suffix: str) -> Path:
        folder = self.run_dir / "artifacts" / slug(self.nodeid)
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{slug(name)}{suffix}"


def heat_map(levels: np.ndarray) -> np.ndarray:
    """(H, W) values in 0..255 as an (H, W, 3) uint8 image in matplotlib's perceptually uniform "inferno":
    black for none (exactly: inferno's own first colour is a trace of blue), through red, to pale yellow."""
    from matplotlib import colormaps

    levels = np.clip(levels, 0, 255).astype(np.uint8)
    rgb = colormaps["inferno"](levels, bytes=True)[..., :3]
    rgb[levels == 0] = 0
    return rgb


@dataclass
class TestRecord:
    __test__ = False  # a record of a test, not a test: keep pytest from collecting it

    nodeid: str
    category: str | None
    outcome: str = "passed"                 # passed | failed | skipped | error
    duration: float = 0.0                   # seconds, setup + call + teardown
    skip_reason: str | None = None
    message: str | None = None              # the failure, in a line or a few
    worker: str | None = None               # the pytest-xdist worker that ran it (gw0, ...); None in a serial run
    metrics: list[Metric] = field(default_factory=list)
    images: list[dict[str, str]] = field(default_factory=list)
    artifacts: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    comparisons: list[dict[str, Any]] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if self.outcome == "skipped":
            return "skip"
        failed = self.outcome in ("failed", "error") or any(m.verdict == "fail" for m in self.metrics)
        return "fail" if failed else "pass"


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid() % 10000:04d}"


SCHEMA_VERSION = "2.2"  # reports/SCHEMA.md documents it; a major change breaks baselines
FOLDERS = {"unit": "unit", "integration": "integration", "performance": "performance", "quality": "quality",
           "stress": "stress", "edge_cases": "edge_case"}  # suites/<folder> -> category marker
CATEGORIES = list(FOLDERS.values())


@dataclass
class Run:
    id: str
    dir: Path
    target_spec: str
    profile: dict[str, Any]                 # Profile.describe(): name, content, hash, unmatched thresholds
    baseline: str | None = None
    baseline_target: str | None = None      # the SPEC speed-ups were measured against
    started: float = field(default_factory=time.time)
    finished: float | None = None
    status: str = "running"                 # running | complete | interrupted | internal_error | target_unavailable
    exit_code: int | None = None
    shard: dict[str, int] | None = None     # --shard i/N: {"index": i, "count": N}
    shards: list[dict[str, Any]] | None = None  # a merge of shards' runs (reports/merge.py): index, id, status, verdict
    target: dict[str, Any] = field(default_factory=dict)        # Target.describe()
    environment: dict[str, Any] = field(default_factory=dict)
    tests: dict[str, TestRecord] = field(default_factory=dict)  # by nodeid, in the order they finished

    def categories(self) -> dict[str, dict[str, Any]]:
        """Per category: counts by verdict and the category's own verdict."""
        out = {}
        for test in self.tests.values():
            c = out.setdefault(test.category or "other", {"pass": 0, "fail": 0, "skip": 0})
            c[test.verdict] += 1
        for c in out.values():
            c["verdict"] = "fail" if c["fail"] else "pass" if c["pass"] else "skip"
        return dict(sorted(out.items(), key=lambda kv: (CATEGORIES + [kv[0]]).index(kv[0])))

    @property
    def verdict(self) -> str:
        if self.status != "complete":
            return "error"  # an unfinished run proves nothing either way
        verdicts = [c["verdict"] for c in self.categories().values()]
        return "fail" if "fail" in verdicts else "pass" if "pass" in verdicts else "skip"

    def unmatched(self, profile) -> list[str]:
        """The PROFILE's thresholds that gated nothing here (harness.gates.Profile.unmatched)."""
        recorded = {m.name for t in self.tests.values() for m in t.metrics if m.note is None}  # gated or gateable
        ran = {t.category for t in self.tests.values() if t.outcome != "skipped"}
        return profile.unmatched(recorded, ran)

    def failed_gates(self) -> list[tuple[str, Metric]]:
        return [(t.nodeid, m) for t in self.tests.values() for m in t.metrics if m.verdict == "fail"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "run": {"id": self.id, "status": self.status, "verdict": self.verdict, "exit_code": self.exit_code,
                    "started": _iso(self.started), "finished": _iso(self.finished),
                    "duration": (self.finished or time.time()) - self.started,
                    "shard": self.shard, "shards": self.shards},
            "environment": self.environment,
            "target": {"spec": self.target_spec, **self.target},
            "profile": self.profile,
            "baseline": self.baseline,
            "baseline_target": self.baseline_target,
            "categories": self.categories(),
            "tests": [{**asdict(t), "verdict": t.verdict} for t in self.tests.values()],
        }


def _iso(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))
