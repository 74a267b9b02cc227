"""report.html: one self-contained file for a reviewer. The verdict first, the ablation of an optimized target
as one table, then each category's tests with their metrics against thresholds and baseline, then the images
(inlined, so the file travels alone)."""
from __future__ import annotations

import base64
from pathlib import Path

import jinja2

TEMPLATES = Path(__file__).parent / "templates"


def _inline(run_dir: Path, relative: str) -> str:
    path = run_dir / relative
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode() if path.is_file() else ""


def _fmt(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def ablation(report: dict) -> dict[str, dict[str, dict]]:
    """Row -> field -> metric, from the metrics named ablation.<row>.<field> (a row's options may hold dots:
    cache=0.1), in the order they were recorded."""
    rows: dict[str, dict[str, dict]] = {}
    for m in (m for t in report["tests"] for m in t["metrics"] if m["name"].startswith("ablation.")):
        row, _, name = m["name"].removeprefix("ablation.").rpartition(".")
        rows.setdefault(row, {})[name] = m
    return rows


def render(run) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.ChainableUndefined)
    env.filters["fmt"] = _fmt
    env.filters["inline"] = lambda rel: _inline(run.dir, rel)
    report = run.to_dict()
    by_category = {name: [t for t in report["tests"] if (t["category"] or "other") == name]
                   for name in report["categories"]}  # in the categories' order, not the order tests finished
    return env.get_template("report.html.j2").render(r=report, by_category=by_category,
                                                     failed_gates=run.failed_gates(), ablation=ablation(report))


def write_html(run) -> Path:
    path = run.dir / "report.html"
    path.write_text(render(run))
    return path
