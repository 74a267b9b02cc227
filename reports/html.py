"""report.html: one self-contained file for a reviewer. The verdict first (what failed and why, each failure
linking to its test), a baseline's changes as a chart, the ablation of an optimized target, then each category:
its charts, its galleries (target | reference | amplified difference), its tests with their metrics against
thresholds and baseline. Images and charts are inlined, so the file travels alone; a content-security policy
lets the page load nothing and run nothing, whatever a prompt or an error message holds."""
from __future__ import annotations

import base64
import io
from pathlib import Path

import jinja2

from harness.record import slug
from reports.charts import ablation_rows, baseline_chart, charts

TEMPLATES = Path(__file__).parent / "templates"
MAX_SIDE = 512  # pixels: a 1024² image is inlined at half size (a quarter of the bytes); artifacts/ keeps it whole
POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def encode(path: Path, keep_peaks: bool = False) -> str:
    """An image file as a data URI, downscaled to MAX_SIDE. KEEP_PEAKS (a difference heat-map): each pixel kept
    is the brightest of those it stands for, so a single differing pixel still shows; else Lanczos."""
    from PIL import Image, ImageFilter

    with Image.open(path) as im:
        if max(im.size) <= MAX_SIDE:
            data = path.read_bytes()
        else:
            factor = -(-max(im.size) // MAX_SIDE)
            if keep_peaks:  # a window reaching factor - 1 each way covers the block that each kept pixel stands for
                im = im.filter(ImageFilter.MaxFilter(2 * factor - 1))
            im.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.NEAREST if keep_peaks else Image.Resampling.LANCZOS)
            buffer = io.BytesIO()
            im.save(buffer, format="PNG", optimize=True)
            data = buffer.getvalue()
    return "data:image/png;base64," + base64.b64encode(data).decode()


class Sheet:
    """The run's images, each inlined once in the page's style sheet as a class and shown wherever it appears
    by that class: a target equal to its reference, or one image in several tests, costs its bytes once."""

    def __init__(self, run_dir: Path, report: dict):
        self.classes: dict[str, str] = {}   # relative path -> class
        uris: dict[str, str] = {}           # data URI -> class
        for t in report["tests"]:
            paths = [(im["path"], False) for im in t["images"]]
            paths += [(c[role], role == "difference") for c in t.get("comparisons", [])
                      for role in ("target", "reference", "difference")]
            for rel, peaks in paths:
                if rel not in self.classes and (run_dir / rel).is_file():  # a removed artifact is left out
                    self.classes[rel] = uris.setdefault(encode(run_dir / rel, peaks), f"i{len(uris)}")
        self.css = "\n".join(f'.{c} {{ background-image: url("{uri}"); }}' for uri, c in uris.items())

    def __call__(self, rel: str) -> str:
        return self.classes.get(rel, "missing")


def _fmt(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.ChainableUndefined)
    env.filters["fmt"] = _fmt
    env.filters["anchor"] = lambda nodeid: "t-" + slug(nodeid)
    env.globals["policy"] = POLICY
    return env


def failures(report: dict) -> list[dict]:
    """Each failed test, with why: its gates' reasons, else the first lines of its failure."""
    out = []
    for t in (t for t in report["tests"] if t["verdict"] == "fail"):
        reasons = [r for m in t["metrics"] for r in m["reasons"]]
        out.append({"nodeid": t["nodeid"], "category": t["category"] or "other",
                    "why": reasons or [line for line in (t["message"] or "failed").splitlines() if line][:3]})
    return out


def render(report: dict, run_dir: Path) -> str:
    by_category = {name: [t for t in report["tests"] if (t["category"] or "other") == name]
                   for name in report["categories"]}  # in the categories' order, not the order tests finished
    rows = ablation_rows([m for t in report["tests"] for m in t["metrics"]])
    return environment().get_template("report.html.j2").render(
        r=report, by_category=by_category, failures=failures(report), ablation=rows, sheet=Sheet(run_dir, report),
        charts=charts(report, run_dir), baseline_chart=baseline_chart(report))


def write_html(run) -> Path:
    path = run.dir / "report.html"
    path.write_text(render(run.to_dict(), run.dir))
    return path


def main(argv: list[str] | None = None) -> int:
    """python -m reports.html RUN_DIR...: report.html again from report.json (a run killed outright leaves
    report.json alone; a report drawn by an older fluxgate is drawn anew)."""
    import argparse
    import json
    import sys

    parser = argparse.ArgumentParser(prog="python -m reports.html", description=main.__doc__.split(":", 1)[1])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR")
    code = 0
    for folder in map(Path, parser.parse_args(argv).runs):
        try:
            report = json.loads((folder / "report.json").read_text())
        except (OSError, ValueError) as e:
            print(f"reports.html: {folder}: no readable report.json ({e})", file=sys.stderr)
            code = 2
            continue
        (folder / "report.html").write_text(render(report, folder))
        print(folder / "report.html")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
