"""report.html: one self-contained file for a reviewer. The verdict first, then each category's tests with
their metrics against thresholds and baseline, then the images (inlined, so the file travels alone)."""
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


def render(run) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.ChainableUndefined)
    env.filters["fmt"] = _fmt
    env.filters["inline"] = lambda rel: _inline(run.dir, rel)
    report = run.to_dict()
    by_category = {name: [t for t in report["tests"] if (t["category"] or "other") == name]
                   for name in report["categories"]}  # in the categories' order, not the order tests finished
    return env.get_template("report.html.j2").render(r=report, by_category=by_category,
                                                     failed_gates=run.failed_gates())


def write_html(run) -> Path:
    path = run.dir / "report.html"
    path.write_text(render(run))
    return path
