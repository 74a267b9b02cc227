"""FID and CMMD over a prompt set split across runs (shards, or machines): each run keeps, as test artifacts,
the features its distances were computed from, one row per image, and the rows of all runs concatenated give
the distance of the whole set, where an average of the runs' distances would not (FID is not linear in them)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from harness.metrics.distribution import cmmd, fid
from harness.metrics.floor import over

KEPT = {"quality.fid": ("inception-features.npz", fid), "quality.cmmd": ("clip-embeddings.npz", cmmd)}


def report_path(path: str | Path) -> Path:
    """A report.json, or the run folder that holds one."""
    path = Path(path)
    found = path / "report.json" if path.is_dir() else path
    if not found.is_file():
        raise ValueError(f"{str(path)!r}: no report.json there")
    return found


def merge(paths: list[str | Path]) -> dict[str, tuple[float, list[int]]]:
    """Metric -> (its value over every run's images together, images per run) for each metric all runs kept,
    and its floor (harness/metrics/floor.py) where all runs kept the floor's too."""
    kept: dict[str, list[dict[str, np.ndarray]]] = {name: [] for name in KEPT}
    for path in map(report_path, paths):
        report = json.loads(path.read_text())
        files = {a["name"]: path.parent / a["path"] for t in report["tests"] for a in t["artifacts"]}
        for name, (artifact, _) in KEPT.items():
            if artifact in files:
                kept[name].append(dict(np.load(files[artifact])))
    merged = {}
    for name, (_, distance) in KEPT.items():
        runs = kept[name]
        if len(runs) < len(paths):  # a metric some run did not keep cannot cover the whole set
            continue
        rows = {key: np.concatenate([run[key] for run in runs]) for key in set.intersection(*map(set, runs))}
        counts = [len(run["target"]) for run in runs]
        merged[name] = (distance(rows["target"], rows["reference"]), counts)
        if "floor" in rows:
            floor = distance(rows["floor"], rows["reference"])
            merged[f"{name}.floor"] = (floor, counts)
            merged[f"{name}.over_floor"] = (over(merged[name][0], floor), counts)
    if not merged:
        raise ValueError("no run kept FID or CMMD features in all the runs given (the quality suite keeps them "
                         "where their weights are on disk)")
    return merged
