"""junit.xml for CI systems: one testcase per test, gate failures as failures, metrics as properties."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path


def write_junit(run) -> Path:
    tests = list(run.tests.values())
    suite = ET.Element("testsuite", name=f"fluxgate {run.target_spec}", tests=str(len(tests)),
                       failures=str(sum(t.verdict == "fail" and t.outcome != "error" for t in tests)),
                       errors=str(sum(t.outcome == "error" for t in tests)),
                       skipped=str(sum(t.verdict == "skip" for t in tests)),
                       time=f"{sum(t.duration for t in tests):.3f}")
    for t in tests:
        module, _, name = t.nodeid.rpartition("::")
        case = ET.SubElement(suite, "testcase", classname=module.replace("/", ".").removesuffix(".py"),
                             name=name, time=f"{t.duration:.3f}")
        if t.metrics:
            props = ET.SubElement(case, "properties")
            for m in t.metrics:
                ET.SubElement(props, "property", name=m.name, value=f"{m.value:g}{m.unit}")
        if t.verdict == "skip":
            ET.SubElement(case, "skipped", message=t.skip_reason or "")
        elif t.verdict == "fail":
            reasons = [r for m in t.metrics for r in m.reasons]
            tag = "error" if t.outcome == "error" else "failure"
            ET.SubElement(case, tag, message=(reasons or [t.message or "failed"])[0]).text = \
                "\n".join(filter(None, [t.message, *reasons]))
    path = run.dir / "junit.xml"
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
    return path
