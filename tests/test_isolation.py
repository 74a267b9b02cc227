"""The oracle apart from the target under test: a target in a child process, golden images on disk, and cold
start measured in a fresh interpreter."""
from __future__ import annotations

import gc
import os
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from harness.coldstart import cold_start
from harness.golden import Oracle, default_store, weights_hash
from harness.isolated import Isolated, failure
from harness.timing import timed_generate
from harness.types import InvalidRequest, Overloaded, TargetError, Unavailable
from helpers import request

REFERENCE = "reference:preset=tiny-dev"
# the same pixels as REFERENCE, under a SPEC of its own: what the parent holds under it is Isolated's doing
ISOLATED = "reference:preset=tiny-dev,max_queue=2"


@pytest.fixture(scope="module")
def isolated(preset_cache):
    with Isolated(ISOLATED) as target:
        yield target


@pytest.fixture(scope="module")
def golden(tmp_path_factory, preset_cache):
    """A store rendered by one Oracle on a copy of tiny-dev: what its first and second calls answered."""
    from targets.reference import presets

    root = tmp_path_factory.mktemp("golden")
    model = Path(shutil.copytree(presets.ensure("tiny-dev"), root / "tiny-dev"))
    spec, store = f"reference:model={model}", root / "store"
    with Oracle(spec, store) as oracle:
        first = oracle.generate(request(seed=5))
        again = oracle.generate(request(seed=5))
        batch = oracle.generate(request(seed=6, num_images=2))
        renderer = oracle.renderer.process
        described = oracle.describe()
    return SimpleNamespace(spec=spec, store=store, model=model, first=first, again=again, batch=batch,
                           renderer=renderer, described=described)


# Isolated


def test_isolated_runs_elsewhere_and_draws_the_reference_images(isolated, started):
    gc.collect()
    assert isolated.pid not in (None, os.getpid())
    assert not [o for o in gc.get_objects() if type(o).__name__ == "ReferenceTarget" and o.spec == ISOLATED]
    req = request(prompt=["a red fox", "a blue bird"], num_images=2, seed=3)
    np.testing.assert_array_equal(isolated.generate(req).images, started(REFERENCE).generate(req).images)


def test_isolated_mirrors_the_child(isolated):
    assert isolated.name == "reference" and isolated.loras() == ["tiny-style"]
    assert isolated.reference_spec() == "reference:preset=tiny-dev,dtype=fp32,device=cpu,max_sequence_length=512"
    caps = isolated.capabilities
    assert caps.max_queue == 2 and caps.lora                     # the child's, from its SPEC
    assert caps.remote and not caps.local_gpu and not caps.components  # but its memory, GPU and parts are not here
    described = isolated.describe()
    assert described["isolated"] is True and described["pid"] == isolated.pid and described["spec"] == ISOLATED


def test_isolated_total_is_measured_in_the_child(isolated):
    isolated.generate(request())  # warm
    start = time.perf_counter()
    result = isolated.generate(request())  # not through timed_generate: "total" came over the pipe
    wall = time.perf_counter() - start
    inside = sum(v for k, v in result.timings.items() if k != "total")
    assert inside <= result.timings["total"] <= wall
    start = time.perf_counter()
    assert timed_generate(isolated, request()).timings["total"] <= time.perf_counter() - start


def test_isolated_serialises_calls_from_threads(isolated, started):
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda seed: isolated.generate(request(seed=seed)).images, range(4)))
    for seed, images in enumerate(results):
        np.testing.assert_array_equal(images, started(REFERENCE).generate(request(seed=seed)).images)


def test_isolated_keeps_invalid_requests_invalid(isolated):
    with pytest.raises(InvalidRequest, match=r"height=1000: must be a multiple of 16"):
        isolated.generate(request(height=1000))
    assert isolated.generate(request()).images.shape == (1, 64, 64, 3)  # and serves on


def test_errors_cross_as_their_contract_type():
    class Full(Overloaded):
        pass

    assert failure(Full("queue full")) == ("Overloaded", "queue full")
    assert failure(KeyError("x")) == ("KeyError", "'x'")


def test_isolated_errors_keep_their_type_and_a_crash_is_not_a_hang(preset_cache):
    target = Isolated("tests.fakes:Flawed:raise_on=fox,die_after=1")
    target.start()
    with pytest.raises(TargetError, match="^cannot draw a fox$"):
        target.generate(request(prompt="a fox"))
    start = time.perf_counter()
    for _ in range(2):  # the crash, and a call after it
        with pytest.raises(TargetError, match=r"died \(exit code 17\)"):
            target.generate(request())
    assert time.perf_counter() - start < 10
    target.close()
    target.close()
    with pytest.raises(Unavailable, match="not started, or closed"):
        target.generate(request())


@pytest.mark.parametrize("spec, reason", [("tests.fakes:Flawed:refuse_start=no GPU", "Unavailable: no GPU"),
                                          ("reference:preset=nope", "ValueError: preset='nope': unknown")])
def test_isolated_that_cannot_start_is_unavailable(preset_cache, spec, reason):
    target = Isolated(spec)
    with pytest.raises(Unavailable, match=f"{re.escape(spec)}.*{re.escape(reason)}"):
        target.start()
    assert target.pid is None  # and nothing is left running


# golden images


def test_oracle_renders_once_then_hits(golden, started):
    assert golden.first.info["golden"] == "rendered" and golden.again.info["golden"] == "hit"
    assert golden.first.info["golden_key"] == golden.again.info["golden_key"]
    np.testing.assert_array_equal(golden.again.images, golden.first.images)
    np.testing.assert_array_equal(golden.first.images, started(REFERENCE).generate(request(seed=5)).images)
    assert golden.described == {"spec": golden.spec, "store": str(golden.store), "hits": 1, "renders": 2}
    assert golden.renderer.poll() is not None  # close() stopped the child
    key = golden.first.info["golden_key"]
    assert {p.name for p in golden.store.glob(f"{key}*")} == {f"{key}.json", f"{key}-0.png"}


def test_a_fresh_oracle_reads_the_store_without_a_child(golden, started):
    with Oracle(golden.spec, golden.store) as oracle:
        result = oracle.generate(request(seed=6, num_images=2))
        assert result.info["golden"] == "hit" and oracle.renderer is None
    assert result.images.shape == (2, 64, 64, 3)
    np.testing.assert_array_equal(result.images, golden.batch.images)
    np.testing.assert_array_equal(result.images, started(REFERENCE).generate(request(seed=6, num_images=2)).images)


def test_the_key_is_the_weights_hash_options_and_request(golden):
    oracle = Oracle(golden.spec, golden.store)
    key = oracle.key(request(seed=5))
    assert key == golden.first.info["golden_key"]
    assert Oracle(REFERENCE, golden.store).key(request(seed=5)) == key  # the same bytes elsewhere: the same key
    assert Oracle(f"{golden.spec},max_queue=1", golden.store).key(request(seed=5)) == key
    assert oracle.key(request(seed=6)) != key
    assert oracle.key(request(seed=5, guidance_scale=4.0)) != key
    assert Oracle(f"{golden.spec},dtype=bf16", golden.store).key(request(seed=5)) != key
    # a default spelt out is the default; another T5 length is another image
    assert Oracle(f"{golden.spec},device=cpu,max_sequence_length=512", golden.store).key(request(seed=5)) == key
    assert Oracle(f"{golden.spec},max_sequence_length=77", golden.store).key(request(seed=5)) != key


def test_the_key_changes_with_the_renderers_code_or_libraries(golden, monkeypatch):
    import harness.environment
    import harness.golden

    key = Oracle(golden.spec, golden.store).key(request(seed=5))
    monkeypatch.setattr(harness.environment, "version", lambda name: "9.9")  # an upgrade
    assert Oracle(golden.spec, golden.store).key(request(seed=5)) != key
    monkeypatch.undo()
    # a fix in the renderer's package: the same spec, another key
    package = golden.store.parent / "pkg" / "myref"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "mine.py").write_text("from targets.reference import ReferenceTarget\n"
                                     "class Mine(ReferenceTarget):\n    pass\n")
    monkeypatch.syspath_prepend(str(package.parent))
    before = harness.golden.renderer_identity("myref.mine:Mine")["code"]
    (package / "sampling.py").write_text("SHIFT = 1.15  # a fix\n")
    assert harness.golden.renderer_identity("myref.mine:Mine")["code"] != before


def test_a_request_without_a_seed_or_a_spec_without_weights_has_no_golden_image(golden):
    with pytest.raises(ValueError, match="seed=None"):
        Oracle(golden.spec, golden.store).generate(request(seed=None))
    with pytest.raises(ValueError, match="must name its weights"):
        Oracle("reference:dtype=fp32", golden.store)


def test_without_the_weights_the_store_serves_what_it_holds(golden):
    away = golden.model.with_name("elsewhere")
    golden.model.rename(away)  # as on a machine whose target is remote
    try:
        oracle = Oracle(golden.spec, golden.store)
        result = oracle.generate(request(seed=5))
        assert result.info["golden"] == "hit"
        np.testing.assert_array_equal(result.images, golden.first.images)
        with pytest.raises(LookupError, match=f"no golden image .*'seed': 7.* in {re.escape(str(golden.store))}.*not here"):
            oracle.generate(request(seed=7))
        assert oracle.renderer is None
    finally:
        away.rename(golden.model)


def test_without_the_weights_or_their_hash_the_oracle_says_what_is_missing(tmp_path):
    with pytest.raises(LookupError, match=r"model=/nowhere/FLUX: the weights are not here .*weights.json"):
        Oracle("reference:model=/nowhere/FLUX", tmp_path).generate(request())


def test_weights_are_hashed_once_per_file_version(tmp_path):
    (tmp_path / "model" / "vae").mkdir(parents=True)
    part, memo = tmp_path / "model" / "vae" / "weights.bin", tmp_path / "digests.json"
    part.write_bytes(b"aaaa")
    first = weights_hash(tmp_path / "model", memo)
    stat = part.stat()
    part.write_bytes(b"bbbb")  # the same size and, put back, the same mtime: the memo answers, unread
    os.utime(part, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert weights_hash(tmp_path / "model", memo) == first
    os.utime(part, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: read again
    second = weights_hash(tmp_path / "model", memo)
    assert second != first
    (tmp_path / "model" / ".cache").mkdir()
    (tmp_path / "model" / ".cache" / "download.metadata").write_text("fetched at noon")  # not weights
    assert weights_hash(tmp_path / "model", memo) == second
    (tmp_path / "model" / "vae" / "config.json").write_text("{}")  # a new file is part of the weights
    assert weights_hash(tmp_path / "model", memo) != second


def test_default_store(monkeypatch, tmp_path):
    monkeypatch.setenv("FLUXGATE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FLUXGATE_GOLDEN", raising=False)
    assert default_store() == tmp_path / "cache" / "golden"
    monkeypatch.setenv("FLUXGATE_GOLDEN", str(tmp_path / "golden"))
    assert default_store() == tmp_path / "golden"


# cold start


@pytest.mark.slow
def test_cold_start_in_a_fresh_interpreter(preset_cache):
    phases = cold_start(REFERENCE, request())
    parts = ["interpreter", "imports", "device", "load", "first_request"]
    assert set(phases) == {*parts, "total"} and all(v >= 0 for v in phases.values())
    assert phases["imports"] > 0 and phases["load"] > 0 and phases["first_request"] > 0
    assert sum(phases[p] for p in parts) <= phases["total"] + 0.01


@pytest.mark.slow
def test_cold_start_of_a_target_that_cannot_start(preset_cache):
    with pytest.raises(RuntimeError, match=r"(?s)exited with code 1.*Unavailable: no GPU"):
        cold_start("tests.fakes:Flawed:refuse_start=no GPU", request())


@pytest.mark.slow
def test_cold_start_that_takes_too_long_is_killed(preset_cache):
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"no image within 0\.5 s, so the child was killed"):
        cold_start(REFERENCE, request(), timeout=0.5)
    assert time.perf_counter() - start < 5
