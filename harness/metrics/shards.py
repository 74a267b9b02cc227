"""FID and CMMD over a prompt set split across runs (shards, or machines): each run keeps, as test artifacts,
the features its distances were computed from, one row per image, and the rows of all runs concatenated give
the distance of the whole set, where an average of the runs' distances would not (FID is not linear in them)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from harness.metrics.distribution import cmmd, fid

KEPT = {"quality.fid": ("inception-features.npz", fid), "quality.cmmd": ("clip-embeddings.npz", cmmd)}


def report_path(path: str | Path) -> Path:
    """A report.json, or the run folder that holds one."""
    path = Path(path)
    found = path / "report.json" if path.is_dir() else path
    if not found.is_file():
        raise ValueError(f"{str(path)!r}: no report.json there")
    return found


def merge(paths: list[str | Path]) -> dict[str, tuple[float, list[int]]]:
    """Metric -> (its value over every run's images together, images per run) for each metric all runs kept."""
    rows: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {name: [] for name in KEPT}
    for path in map(report_path, paths):
        report = json.loads(path.read_text())
        files = {a["name"]: path.parent / a["path"] for t in report["tests"] for a in t["artifacts"]}
        for name, (artifact, _) in KEPT.items():
            if artifact in files:
                kept = np.load(files[artifact])
                rows[name].append((kept["target"], kept["reference"]))
    merged = {}
    for name, (_, distance) in KEPT.items():
        if len(rows[name]) == len(paths):  # a metric some run did not keep cannot cover the whole set
            ours, theirs = (np.concatenate([r[i] for r in rows[name]]) for i in (0, 1))
            merged[name] = (distance(ours, theirs), [len(r[0]) for r in rows[name]])
    if not merged:
        raise ValueError("no run kept FID or CMMD features in all the runs given (the quality suite keeps them "
                         "where their weights are on disk)")
    return merged
