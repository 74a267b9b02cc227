"""Sharded runs (--shard i/N) and their merge (python -m reports.merge) into one report with one verdict: each
shard runs a share of the tests, the tests over the quality prompt set run in every shard over a share of the
prompts, and the merge gives the whole run's tests, metrics and verdict."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import pytest

from browser import inspect
from harness.shard import Shard
from reports.merge import main
from runs import SELFTEST, captured, run_suites

SCHEMA = json.loads((Path(__file__).parents[1] / "reports" / "report.schema.json").read_text())
# a packing test (unit), the prompt-set comparison and the repeat consistency (quality), through a target whose
# red cast moves PSNR by the image, over 3 prompts: shard 1/2 gets prompts 0 and 2, shard 2/2 prompt 1
SELECTION = ("--category", "unit", "--category", "quality", "-k", "similar or consistent or packing",
             "--target", "tests.fakes:Flawed:colour_shift=40")
SIMILAR = "suites/quality/test_image_quality.py::test_similar_to_the_reference_over_prompts"
EDITS = "suites/quality/test_image_quality.py::test_edits_similar_to_the_references_over_prompts"
CONSISTENT = "suites/quality/test_image_quality.py::test_repeated_requests_are_consistent"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """The selection whole, and as shards 1/2 and 2/2: each run's folder and report, under a profile whose quality
    gates the red cast passes."""
    root = tmp_path_factory.mktemp("shards")
    profile = root / "sharded.toml"
    profile.write_text(f'name = "sharded"\nextends = "{SELFTEST}"\n[settings]\nquality_prompts = 3\n[thresholds]\n'
                       '"quality.psnr.min" = { min = 10 }\n"quality.ssim.min" = { min = 0 }\n'
                       '"quality.mean_abs_diff.max" = { max = 64 }\n"quality.channel_shift.max" = { max = 64 }\n')
    found = {}
    for name, shard in (("whole", ()), ("1", ("--shard", "1/2")), ("2", ("--shard", "2/2"))):
        code, output, report = run_suites(*SELECTION, *shard, "--profile", str(profile), out=root / name)
        assert code == 0, output[-3000:]
        found[name] = (next((root / name).iterdir()), report)
    return found


def merged(*runs: Path, out: Path, partial: bool = False) -> tuple[int, str, dict | None]:
    code, output = captured(main, [*map(str, runs), "--out", str(out), *(["--partial"] if partial else [])])
    report = out / "report.json"
    return code, output, json.loads(report.read_text()) if report.is_file() else None


def edited(run: Path, to: Path, edit) -> Path:
    """A copy of the run folder with EDIT(report) applied to its report.json."""
    shutil.copytree(run, to)
    report = json.loads((to / "report.json").read_text())
    edit(report)
    (to / "report.json").write_text(json.dumps(report))
    return to


def metric(report: dict, nodeid: str, name: str) -> dict:
    return next(m for t in report["tests"] if t["nodeid"] == nodeid for m in t["metrics"] if m["name"] == name)


@pytest.mark.parametrize("text", ["0/2", "3/2", "a/b", "1/0", "1/2/3", "-1/2", "1"])
def test_a_shard_is_i_of_n(text):
    with pytest.raises(ValueError, match=rf"--shard '{text}': give i/N, shard i of N with 1 <= i <= N"):
        Shard.parse(text)
    assert Shard.parse("2/3") == Shard(2, 3)


def test_shards_split_by_module_or_by_test_and_together_hold_every_test_once():
    items = [SimpleNamespace(path=Path(f"m{m}.py"), nodeid=f"m{m}.py::t{t}", shared=(m, t) == (1, 0))
             for m in range(3) for t in range(3)]
    shared = lambda item: item.shared  # noqa: E731
    assert [i.nodeid for i in Shard(2, 2).select(items, shared)] == ["m1.py::t0", "m1.py::t1", "m1.py::t2"]
    for count in range(1, 9):  # by module up to 3 shards, then test by test
        chosen = [Shard(i, count).select(items, shared) for i in range(1, count + 1)]
        assert all(any(not i.shared for i in share) for share in chosen), f"a shard of {count} without its own"
        own = [i.nodeid for share in chosen for i in share if not i.shared]
        assert sorted(own) == sorted(i.nodeid for i in items if not i.shared)  # each exactly once
        assert all(items[3] in share for share in chosen)  # the shared one in every shard


def test_a_bad_shard_is_a_usage_error(tmp_path):
    code, output, _ = run_suites("--shard", "3/2", out=tmp_path)
    assert code == 2 and "--shard '3/2': give i/N, shard i of N with 1 <= i <= N" in output


def test_each_shard_runs_a_share_and_together_the_whole(runs):
    tests = {name: {t["nodeid"] for t in report["tests"]} for name, (_, report) in runs.items()}
    assert tests["1"] < tests["whole"] and tests["2"] < tests["whole"]
    assert tests["1"] | tests["2"] == tests["whole"]
    assert tests["1"] & tests["2"] == {SIMILAR, EDITS}  # over the prompt set: in every shard
    assert [metric(runs[n][1], SIMILAR, "quality.psnr.mean")["n"] for n in ("whole", "1", "2")] == [3, 2, 1]
    for name in ("1", "2"):
        jsonschema.validate(runs[name][1], SCHEMA)
        assert runs[name][1]["run"]["shard"] == {"index": int(name), "count": 2}


def test_the_merge_is_the_whole_run(runs, tmp_path, browser, screenshots):
    code, output, report = merged(runs["2"][0], runs["1"][0] / "report.json", out=tmp_path / "merged")
    whole = runs["whole"][1]
    assert code == 0 and "fluxgate merge: PASS" in output, output
    jsonschema.validate(report, SCHEMA)
    assert report["run"]["verdict"] == whole["run"]["verdict"] and report["run"]["status"] == "complete"
    assert [s["index"] for s in report["run"]["shards"]] == [1, 2]
    assert {t["nodeid"] for t in report["tests"]} == {t["nodeid"] for t in whole["tests"]}
    assert report["categories"] == whole["categories"]
    shares = [metric(runs[n][1], SIMILAR, "quality.psnr.mean")["value"] for n in ("1", "2")]
    for name in ("quality.psnr.mean", "quality.psnr.min", "quality.ssim.mean", "quality.channel_shift.max"):
        got, want = metric(report, SIMILAR, name), metric(whole, SIMILAR, name)
        assert got["value"] == pytest.approx(want["value"], rel=1e-12) and got["n"] == 3, name
        assert got["verdict"] == want["verdict"] and got["note"] is None
    assert metric(report, SIMILAR, "quality.psnr.mean")["value"] != pytest.approx(sum(shares) / 2, rel=1e-9)
    similar = next(t for t in report["tests"] if t["nodeid"] == SIMILAR)
    assert len(similar["comparisons"]) == 3 and all((tmp_path / "merged" / c[role]).is_file()
                                                    for c in similar["comparisons"] for role in ("target", "reference"))
    html = (tmp_path / "merged" / "report.html").read_text()
    assert "merged from" in html and "zoom missing" not in html and html.count('class="comparison"') == 3
    found = inspect(browser, tmp_path / "merged" / "report.html", screenshots / "report-merged.png")
    assert found.clean and found.images >= 3, found
    assert (tmp_path / "merged" / "junit.xml").is_file()


def test_a_merge_judges_the_merged_metrics_and_fails_with_a_failed_shard(runs, tmp_path):
    def failed(report):
        test = next(t for t in report["tests"] if t["nodeid"] == CONSISTENT)
        test["outcome"], test["message"] = "failed", "AssertionError: the images differ"

    code, output, report = merged(runs["1"][0], edited(runs["2"][0], tmp_path / "failed", failed), out=tmp_path / "m1")
    assert code == 1 and f"failed: {CONSISTENT}: AssertionError: the images differ" in output, output
    assert report["run"]["verdict"] == "fail"

    def worse(report):  # a worst prompt past its gate, with the verdict the shard recorded left at pass
        metric(report, SIMILAR, "quality.psnr.min")["value"] = 5.0

    code, output, report = merged(edited(runs["1"][0], tmp_path / "worse", worse), runs["2"][0], out=tmp_path / "m2")
    assert code == 1 and "quality.psnr.min = 5dB is below the minimum 10" in output, output
    assert metric(report, SIMILAR, "quality.psnr.min")["verdict"] == "fail"


def test_shards_of_different_runs_are_refused_naming_the_difference(runs, tmp_path):
    one, two = runs["1"][0], runs["2"][0]
    code, output, _ = merged(one, out=tmp_path / "a")
    assert code == 2 and "shard 2/2 missing (given: 1/2); --partial merges what is given" in output, output
    code, output, _ = merged(one, one, out=tmp_path / "b")
    assert code == 2 and "shard 1/2 given twice" in output, output
    other = edited(two, tmp_path / "other", lambda r: r["profile"].update(sha256="0" * 64))
    code, output, _ = merged(one, other, out=tmp_path / "c")
    assert code == 2 and "profile 'sharded (sha256 000000000000)'" in output, output
    code, output, _ = merged(runs["whole"][0], two, out=tmp_path / "d")
    assert code == 2 and "not a shard (a run without --shard); --partial merges it all the same" in output, output
    code, output, report = merged(one, out=tmp_path / "e", partial=True)
    assert code == 0 and report["run"]["shards"][0]["index"] == 1, output
