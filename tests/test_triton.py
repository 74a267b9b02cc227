"""A real Triton Inference Server (from the nvidia-pytriton wheel, in its own environment) serving tiny-kontext
(which edits and also draws from text) from fluxgate's model repository: the unit, integration, edge-case and
stress suites pass through it over HTTP, images and edits are the in-process reference's, gRPC works too, a
bad input image is refused while the server keeps serving, and a model that cannot load is reported with
Triton's reason instead of a hang. One server for the module: the model that cannot load is loaded on it
while it runs. The serving environment (numpy < 2, this torch) is kept while its stamp holds."""
from __future__ import annotations

import dataclasses
import re
import subprocess
import time

import diffusers
import numpy as np
import pytest
import torch

from harness import images
from harness.target import make_target
from harness.types import GenerationRequest, InvalidRequest, Unavailable
from helpers import FP32
from runs import metrics, run_suites
from targets.process import free_port
from targets.triton.server import TritonServer, ensure_env
from targets.triton.wire import inputs_of

pytestmark = pytest.mark.triton

# Triton's environment runs this environment's torch (targets/triton/server.py: ensure_env), so its images are
# the reference's to the bit; the suites still hold them to the fp32 tolerance, as they would any fp32 target.


@pytest.fixture(scope="module")
def triton(preset_cache):
    with TritonServer(preset="tiny-kontext") as server:
        yield server


def test_the_suites_pass_through_triton(triton, tmp_path):
    code, output, report = run_suites("--target", f"triton://{triton.http_url}", "--category", "unit",
                                      "--category", "integration", "--category", "edge_case", "--category", "stress",
                                      out=tmp_path)
    assert code == 0, output[-3000:]
    skipped = [t["nodeid"] for t in report["tests"] if t["category"] == "unit" and t["outcome"] == "skipped"]
    assert report["categories"]["unit"]["pass"] >= 7, "the unit suite must reach each component model"
    assert all("test_optimizations" in nodeid for nodeid in skipped), skipped  # Triton names no optimization
    equivalence = metrics(report, "test_equivalent_to_the_reference")
    assert equivalence["equivalence.max_abs_diff"] <= FP32.max_levels
    assert equivalence["equivalence.mean_abs_diff"] <= FP32.mean_levels
    edit = metrics(report, "test_an_edit_is_equivalent_to_the_references")  # no metrics, a KeyError, if skipped
    assert edit["equivalence.max_abs_diff"] <= FP32.max_levels
    assert edit["equivalence.mean_abs_diff"] <= FP32.mean_levels


def test_grpc_gives_the_reference_images_and_triton_statistics(triton, started):
    request = GenerationRequest(["a red fox", "a lighthouse"], 64, 64, 2, seed=5, num_images=2)
    with make_target(f"triton://{triton.grpc_url}?protocol=grpc") as target:
        result = target.generate(request)
    assert np.array_equal(result.images, started("reference:preset=tiny-kontext").generate(request).images)
    assert result.timings["server.compute_infer"] > 0 and result.timings["infer"] >= result.timings["server.queue"]


def test_an_edit_is_the_references_and_a_bad_image_is_refused_by_the_server_which_serves_on(triton, started):
    # the preferred fit: the model sees the input at 1248 x 832, so its tokens and ids are not the image's
    edit = GenerationRequest("make the disc red", 64, 64, 2, seed=3, image=images.card(32, 48))
    with make_target(f"triton://{triton.grpc_url}?protocol=grpc") as target:
        assert target.capabilities.images  # read from the served weights' model_index.json
        assert np.array_equal(target.generate(edit).images,
                              started("reference:preset=tiny-kontext").generate(edit).images)
        # sides under 16: the client refuses it, and so does the server when it is sent past the client
        tiny = np.zeros((8, 8, 3), np.uint8)
        with pytest.raises(InvalidRequest, match=r"image=<uint8 array 8x8x3>: is 8x8"):
            target.generate(dataclasses.replace(edit, image=tiny))
        with pytest.raises(InvalidRequest, match=r"image=<uint8 array 8x8x3>: is 8x8.*INVALID_ARG"):
            target.infer("flux", inputs_of(edit, target.capabilities.max_image_side) | {"image": tiny}, ["images"])
        assert target.generate(dataclasses.replace(edit, image_fit="request")).images.shape == (1, 64, 64, 3)


def test_a_model_that_fails_to_load_is_unavailable_with_tritons_reason(triton):
    missing = f"{triton.model_dir}-missing"
    started = time.monotonic()
    try:
        with pytest.raises(Unavailable, match="Triton model 'transformer' did not load") as failed:
            triton.load("transformer", model_dir=missing)
        assert missing in str(failed.value)  # the model's own error, as Triton passes it on
        assert time.monotonic() - started < 60  # told when the load fails, not at a timeout
        # the check a start makes reads the same failure, with its reason, from Triton's model index
        with pytest.raises(Unavailable, match=f"Triton model 'transformer' did not load: .*{re.escape(missing)}"):
            triton.wait()
    finally:
        triton.load("transformer")  # the module's server serves it again


def test_no_server_is_unavailable():
    with pytest.raises(Unavailable, match="cannot connect"):
        make_target(f"triton://127.0.0.1:{free_port()}").start()


def test_the_serving_environment_has_numpy_below_2_and_this_torch_and_is_kept(tmp_path):
    """Made in seconds (the server and numpy < 2 alone), it imports numpy < 2 first and this environment's torch
    and diffusers; a second call keeps it, and a stamp that no longer holds makes it anew."""
    env = ensure_env(tmp_path)
    probe = "import numpy, torch, diffusers; print(numpy.__version__, torch.__version__, diffusers.__version__)"
    found = subprocess.run([env / "bin" / "python", "-c", probe], capture_output=True, text=True, check=True)
    numpy, *libraries = found.stdout.split()
    assert numpy.startswith("1.") and libraries == [torch.__version__, diffusers.__version__]
    stamp = env / "fluxgate-stamp.txt"
    made = stamp.stat().st_mtime_ns
    assert ensure_env(tmp_path) == env and stamp.stat().st_mtime_ns == made
    stamp.write_text("another environment")
    assert ensure_env(tmp_path) == env and stamp.stat().st_mtime_ns != made


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_locust_workers_load_triton_on_schedule(triton, protocol):
    """A Locust worker sends through Triton's own clients: each request answered, none sent late (gRPC's calls
    would block the worker's greenlets, and every send behind them, were gRPC not told of gevent)."""
    from harness.swarm import Swarm

    address = triton.http_url if protocol == "http" else triton.grpc_url
    with Swarm(f"triton://{address}?protocol={protocol}", workers=1) as swarm:
        result = swarm.open(lambda i: GenerationRequest(f"load {i}", 64, 64, 1, seed=i), rate=4, duration=1.0)
    assert result.counts()["ok"] == 4 and result.late == 0, result.summary()
