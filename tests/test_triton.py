"""A real Triton Inference Server (from the nvidia-pytriton wheel, in its own environment) serving tiny-dev
from fluxgate's model repository: the unit, integration, edge-case and stress suites pass through it over
HTTP, images match the in-process reference's, gRPC works too, and a model that cannot load is reported
with Triton's reason instead of a hang. One server for the module: the model that cannot load is loaded on it
while it runs."""
from __future__ import annotations

import re
import time

import numpy as np
import pytest

from harness.target import make_target
from harness.types import GenerationRequest, Unavailable
from helpers import FP32
from runs import metrics, run_suites
from targets.process import free_port
from targets.triton.server import TritonServer

pytestmark = pytest.mark.triton

# Triton's environment runs a CPU build of torch, the newest pip finds up to this environment's version, which
# may be an older one (2.13.0+cpu beside 2.14.1): fp32 rounding then moves a rare pixel by a level (measured:
# exact at 64x64, 1 level in 3 to 11 pixels of three 128x128 or 256x256 images), so images are held to the fp32
# tolerance, not to the bit.


@pytest.fixture(scope="module")
def triton(preset_cache):
    with TritonServer(preset="tiny-dev") as server:
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


def test_grpc_gives_the_reference_images_and_triton_statistics(triton, started):
    request = GenerationRequest(["a red fox", "a lighthouse"], 64, 64, 2, seed=5, num_images=2)
    with make_target(f"triton://{triton.grpc_url}?protocol=grpc") as target:
        result = target.generate(request)
    diff = np.abs(result.images.astype(int) - started("reference").generate(request).images.astype(int))
    assert diff.max() <= FP32.max_levels and diff.mean() <= FP32.mean_levels
    assert result.timings["server.compute_infer"] > 0 and result.timings["infer"] >= result.timings["server.queue"]


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
