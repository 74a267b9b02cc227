"""A real Triton Inference Server (from the nvidia-pytriton wheel, in its own environment) serving tiny-dev
from fluxgate's model repository: the unit, integration, edge-case and stress suites pass through it over
HTTP, images equal the in-process reference's, gRPC works too, and a model that cannot load is reported
with Triton's reason instead of a hang."""
from __future__ import annotations

import time

import pytest

from harness.target import make_target
from harness.types import GenerationRequest, Unavailable
from targets.process import free_port
from targets.triton.server import TritonServer
from test_run_tests import run_tests
from test_service import metrics


@pytest.fixture(scope="module")
def triton(preset_cache):
    with TritonServer(preset="tiny-dev") as server:
        yield server


def test_the_suites_pass_through_triton(triton, tmp_path):
    code, output, report = run_tests("--target", f"triton://{triton.http_url}", "--category", "unit",
                                     "--category", "integration", "--category", "edge_case", "--category", "stress",
                                     out=tmp_path, timeout=900)
    assert code == 0, output[-3000:]
    unit = report["categories"]["unit"]
    assert unit["pass"] >= 7 and unit["skip"] == 0, "the unit suite must reach each component model"
    assert metrics(report, "test_equivalent_to_the_reference")["equivalence.max_abs_diff"] == 0  # fp32: exact


def test_grpc_gives_the_same_images_and_triton_statistics(triton, started):
    request = GenerationRequest(["a red fox", "a lighthouse"], 64, 64, 2, seed=5, num_images=2)
    with make_target(f"triton://{triton.grpc_url}?protocol=grpc") as target:
        result = target.generate(request)
    assert (result.images == started("reference").generate(request).images).all()
    assert result.timings["server.compute_infer"] > 0 and result.timings["infer"] >= result.timings["server.queue"]


def test_a_model_that_fails_to_load_is_unavailable_with_tritons_reason(preset_cache):
    started = time.monotonic()
    with pytest.raises(Unavailable, match="Triton model 'transformer' did not load") as failed:
        with TritonServer(preset="tiny-dev", broken="transformer"):
            pass
    assert "tiny-dev-v2-missing" in str(failed.value) and time.monotonic() - started < 300


def test_no_server_is_unavailable():
    with pytest.raises(Unavailable, match="cannot connect"):
        make_target(f"triton://127.0.0.1:{free_port()}").start()
