"""The Modal target against a stand-in on 127.0.0.1 that speaks Modal's web-endpoint contract (proxy auth,
303 to a result URL for long calls, the model loaded on the first request), and against real Modal only
when credentials and an endpoint are given."""
from __future__ import annotations

import os

import numpy as np
import pytest

from harness import images
from harness.target import make_target
from harness.types import GenerationRequest, Unavailable
from targets.modal import endpoint_url
from targets.reference import presets
from targets.service.launch import Service
from runs import run_suites

KEY, SECRET = "wk-standin-key", "ws-standin-secret-0123456789"


@pytest.fixture(scope="module")
def standin(preset_cache):
    """A cold stand-in: tiny-dev loads on the first request, and calls over 1 s are redirected."""
    presets.ensure("tiny-dev")  # built here: a stand-in that builds it imports the model's libraries before any
                                # request, and its first call is no longer cold
    with Service("reference:preset=tiny-dev", "--modal", "--redirect-after", "1.0", "--raw-path", "/flux-dev",
                 env={"MODAL_KEY": KEY, "MODAL_SECRET": SECRET}, ready=False) as s:
        yield s


@pytest.fixture
def credentials(monkeypatch):
    monkeypatch.setenv("MODAL_KEY", KEY)
    monkeypatch.setenv("MODAL_SECRET", SECRET)


def spec(standin) -> str:
    return f"modal://fluxgate/ryla/comfyui?path=/flux-dev&endpoint={standin.url}"


def test_the_url_is_modals():
    assert endpoint_url("my-team", "ryla", "flux_dev") == "https://my-team--ryla-flux-dev.modal.run"
    assert make_target("modal://my-team/ryla/generate").url == "https://my-team--ryla-generate.modal.run"
    with pytest.raises(ValueError, match="modal://workspace/app/function"):
        make_target("modal://my-team/ryla")
    with pytest.raises(ValueError, match="app='r y'"):
        endpoint_url("my-team", "r y", "f")


@pytest.mark.server
def test_the_cold_first_call_is_redirected_followed_and_reported_apart(standin, credentials, started):
    request = GenerationRequest("a lake in the mountains", 64, 64, 2, seed=4)
    with make_target(spec(standin)) as target:
        cold = target.generate(request)
        warm = target.generate(request)
        described = target.describe()
    assert cold.info["redirects"] >= 1, "a first call that loads the model outlasts 1 s: Modal answers 303"
    assert warm.info["redirects"] == 0
    assert np.array_equal(cold.images, started("reference").generate(request).images)
    assert np.array_equal(cold.images, warm.images)
    assert described["cold_start_s"] > 1.0 and described["auth"]
    assert described["function_url"] == "https://fluxgate--ryla-comfyui.modal.run"


@pytest.mark.server
@pytest.mark.parametrize("key,secret,words", [(None, None, "are not both set"), (KEY, "wrong", "were refused")])
def test_without_the_right_token_it_is_unavailable(standin, monkeypatch, key, secret, words):
    for name, value in (("MODAL_KEY", key), ("MODAL_SECRET", secret)):
        monkeypatch.delenv(name, raising=False) if value is None else monkeypatch.setenv(name, value)
    with make_target(spec(standin)) as target, pytest.raises(Unavailable, match=words):
        target.generate(GenerationRequest("a", 64, 64, 1))


@pytest.mark.server
def test_a_run_reports_the_cold_start_and_never_the_token(standin, credentials, tmp_path):
    code, output, report = run_suites("--target", spec(standin), "--category", "performance", "-k", "cold_start",
                                     "--category", "integration", out=tmp_path)
    assert code == 0, output[-3000:]
    cold = next(t for t in report["tests"] if "test_cold_start" in t["nodeid"])
    names = {m["name"] for m in cold["metrics"]}
    assert {"cold_start.first_request", "cold_start.warm", "cold_start.excess"} <= names
    written = output + "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file())
    assert KEY not in written and SECRET not in written


@pytest.mark.skipif(not all(os.environ.get(v) for v in ("MODAL_KEY", "MODAL_SECRET", "FLUXGATE_MODAL_TARGET")),
                    reason="real Modal needs MODAL_KEY, MODAL_SECRET and FLUXGATE_MODAL_TARGET=modal://ws/app/fn")
def test_a_real_modal_endpoint():
    with make_target(os.environ["FLUXGATE_MODAL_TARGET"]) as target:
        result = target.generate(GenerationRequest("A beautiful landscape with mountains and a lake", 512, 512, 4))
    assert result.images.shape == (1, 512, 512, 3) and result.images.std() > 0


@pytest.mark.server
def test_an_edit_goes_as_the_raw_protocol_sends_it(service, started):
    """The image base64 in the raw body, to a Kontext model behind the endpoint (the session's service,
    named as an endpoint: this is the Modal target's wire, not the stand-in's cold start)."""
    request = GenerationRequest("make the disc red", 64, 64, 2, seed=3, image=images.card(64, 64),
                                image_fit="request")
    with make_target(f"modal://me/app/flux?endpoint={service.url}&path=/generate&edits=1") as target:
        edit = target.generate(request).images
    assert np.array_equal(edit, started("reference:preset=tiny-kontext").generate(request).images)
