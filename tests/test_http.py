"""The HTTP target's own work: calls and seeds per protocol, what it refuses before sending, how statuses and
transport failures become the contract's errors, and the timings it reads and keeps apart."""
from __future__ import annotations

import re
import time

import httpx
import pytest

from harness.target import make_target
from harness.types import GenerationRequest, InvalidRequest, TargetError, Unavailable
from targets.http import HttpTarget, server_timing


def test_server_timing_header_is_read_in_seconds():
    assert server_timing('queue;dur=1.5, denoise;desc="steps";dur=80, miss, cache;desc=hit') == \
        {"queue": 0.0015, "denoise": 0.08}


@pytest.mark.parametrize("protocol,calls", [
    ("openai", [(0, "a", 2, 10), (1, "b", 2, 12)]),                       # n images of one prompt a call
    ("raw", [(0, "a", 1, 10), (0, "a", 1, 11), (1, "b", 1, 12), (1, "b", 1, 13)]),  # one image a call
])
def test_a_request_split_into_calls_keeps_each_images_seed(protocol, calls):
    target = HttpTarget("http://127.0.0.1:9", protocol=protocol)
    assert target.calls(GenerationRequest(["a", "b"], 64, 64, 1, seed=10, num_images=2)) == calls


@pytest.mark.parametrize("protocol,fields,words", [
    ("openai", {"height": "512"}, "height='512': must be an integer"),     # "WxH" would hide the type
    ("openai", {"guidance_scale": float("nan")}, "guidance_scale=nan"),   # JSON has no NaN
    ("openai", {"prompt": ["a", "b"], "num_images": 5}, "exceeds the batch limit"),  # the calls would hide it
    ("a1111", {"seed": -5}, "reads -1 as 'random'"),
    ("a1111", {"lora": "tiny-style"}, "does not support LoRA"),            # the protocol has no field for it
])
def test_what_the_wire_cannot_carry_is_refused_before_sending(protocol, fields, words):
    target = HttpTarget("http://127.0.0.1:9", protocol=protocol)  # not started: it could send nothing
    with pytest.raises(InvalidRequest, match=re.escape(words)):
        target.generate(GenerationRequest(**{"prompt": "a", "height": 64, "width": 64, **fields}))


@pytest.mark.server
def test_the_server_names_its_field_and_the_target_adds_the_contracts(service):
    with make_target(f"{service.url}?protocol=a1111") as target:
        with pytest.raises(InvalidRequest) as refused:
            target.generate(GenerationRequest("a", 64, 64, num_inference_steps=0))
    assert str(refused.value).startswith("steps=0: must be an integer from 1 to 1000")
    assert "num_inference_steps" in str(refused.value)


@pytest.mark.server
def test_timings_keep_the_server_and_the_client_apart(service):
    with make_target(service.url) as target:
        result = target.generate(GenerationRequest("a", 64, 64, 1, num_images=2))
    t = result.timings
    assert {"http", "client.decode", "server.queue", "server.compute", "server.denoise"} <= set(t)
    assert t["server.compute"] >= t["server.denoise"] > 0 and t["http"] >= t["server.compute"]
    assert result.info["model"] == "tiny-kontext" and result.info["calls"] == 1


@pytest.mark.server
def test_no_answer_within_the_timeout_is_a_target_error(service):
    with make_target(f"{service.url}?timeout=0.05") as target:
        with pytest.raises(TargetError, match="no answer within 0.05 s"):
            target.generate(GenerationRequest("slow", 256, 256, 4))
    deadline = time.monotonic() + 30
    while httpx.get(f"{service.url}/ready").json()["pending"] and time.monotonic() < deadline:
        time.sleep(0.05)  # the server finishes the abandoned request: leave it idle for the tests after


@pytest.mark.server
def test_the_capabilities_and_reference_come_from_the_service(service):
    with make_target(f"{service.url}?protocol=raw") as target:
        caps = target.capabilities
        assert caps.remote and not caps.components and caps.max_queue == 4 and caps.lora
        assert target.loras() == ["tiny-style"]
        assert target.reference_spec() == "reference:preset=tiny-kontext,dtype=fp32,device=cpu,max_sequence_length=512"
        assert target.health()
    with make_target(f"{service.url}?protocol=a1111") as target:
        assert not target.capabilities.lora and target.loras() == []  # the protocol has no LoRA field


def test_a_request_split_into_calls_is_held_to_the_pixel_budget_by_the_client():
    """raw sends one image a call, so no server sees the request whole: its budget is judged here, before any
    call (the target is never started)."""
    target = make_target("http://127.0.0.1:9?protocol=raw")
    with pytest.raises(InvalidRequest, match=r"num_images=3: 3 image\(s\) of 2048x2048"):
        target.generate(GenerationRequest("a cat", 2048, 2048, 4, num_images=3))
    with pytest.raises(Unavailable, match="not started"):  # within the budget: on to the wire
        target.generate(GenerationRequest("a cat", 2048, 2048, 4, num_images=2))
