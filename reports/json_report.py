"""report.json: the run as reports/SCHEMA.md documents it, written atomically."""
from __future__ import annotations

import json
import os
from pathlib import Path


def write_json(run) -> Path:
    path = run.dir / "report.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(run.to_dict(), indent=2, default=str))
    os.replace(tmp, path)  # a reader never sees half a report
    return path
