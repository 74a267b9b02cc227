"""Bad input gets a clear InvalidRequest naming the field, never a TargetError, a crash or a hang; unusual
but valid input gets an image; and the target keeps serving throughout. For a target that edits, the same of
its input image: bad ones refused by name, odd but valid ones edited."""
from __future__ import annotations

import dataclasses
import math
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import images
from harness.types import GenerationRequest, InvalidRequest


def call(target, request: GenerationRequest, timeout: float):
    """target.generate(request) in a watchdog thread: a hang fails the test instead of stalling the run."""
    box = {}

    def run():
        try:
            box["result"] = target.generate(request)
        except BaseException as e:  # handed back to the test, whatever it is
            box["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"no answer within {timeout} s for {request}"
    if "error" in box:
        raise box["error"]
    return box["result"]


BAD = [  # (field, value): a value, or a function of the target's capabilities for its own limits
    ("height", 1000), ("width", 1000), ("height", 8), ("height", 0), ("width", -512),
    ("height", lambda caps: caps.max_side + 16), ("height", 512.0), ("width", "512"), ("height", None),
    ("num_inference_steps", 0), ("num_inference_steps", -1), ("num_inference_steps", 10**9),
    ("num_inference_steps", 2.5),
    ("guidance_scale", math.nan), ("guidance_scale", math.inf), ("guidance_scale", -math.inf),
    ("guidance_scale", -1.0), ("guidance_scale", 1e39), ("guidance_scale", "high"),
    ("num_images", 0), ("num_images", -1), ("num_images", lambda caps: caps.max_batch + 1), ("num_images", 1.5),
    ("prompt", None), ("prompt", 42), ("prompt", []), ("prompt", [None]), ("prompt", b"bytes"),
    ("prompt", "a lone surrogate \ud800"), ("prompt", ["fine", "\udfff"]),
    ("prompt", lambda caps: "x" * (caps.max_prompt_chars + 1)),
    ("seed", -1), ("seed", 2**64), ("seed", "zero"), ("seed", 1.5),
]


@pytest.mark.parametrize("field,value", BAD, ids=[f"{f}={'limit+1' if callable(v) else repr(v)}" for f, v in BAD])
def test_bad_value_is_refused_by_name(target, make_request, profile, field, value):
    value = value(target.capabilities) if callable(value) else value
    with pytest.raises(InvalidRequest) as refused:
        call(target, make_request(**({"prompt": "a cat"} | {field: value})), profile.get("edge_timeout"))
    assert field in str(refused.value), f"the error does not name {field}: {refused.value}"


def test_batch_over_the_limit_is_refused_not_attempted(target, make_request, profile):
    n = target.capabilities.max_batch
    with pytest.raises(InvalidRequest, match="num_images"):
        call(target, make_request(["a", "b"], num_images=n // 2 + 1), profile.get("edge_timeout"))


def test_a_request_over_the_pixel_budget_is_refused(target, make_request, profile):
    side = target.capabilities.max_side - target.capabilities.max_side % 16
    n = target.capabilities.max_pixels // side**2 + 1  # one image more than the budget holds at the largest side
    if n > target.capabilities.max_batch:
        pytest.skip(f"{n} images of {side}² pass the batch limit of {target.capabilities.max_batch} first")
    with pytest.raises(InvalidRequest, match="pixels") as refused:
        call(target, make_request("a cat", height=side, width=side, num_images=n), profile.get("edge_timeout"))
    assert "num_images" in str(refused.value) or "n=" in str(refused.value), refused.value


def test_unusual_prompts_give_images(target, make_request, edge_prompts, profile, recorder):
    size = profile.get("load_size")
    for name, prompt in edge_prompts.items():
        result = call(target, make_request(prompt, height=size, width=size, num_inference_steps=1),
                      profile.get("edge_timeout"))
        assert result.images.shape == (1, size, size, 3), name
        recorder.image(name, result.images[0], caption=prompt)  # the report must show these as text, inert
    recorder.metric("edge.prompts_served", len(edge_prompts), "prompts")


def test_a_2000_word_prompt_is_truncated_not_fatal(target, make_request, profile, recorder):
    size = profile.get("load_size")
    prompt = " ".join(f"word{i}" for i in range(2000))
    result = call(target, make_request(prompt, height=size, width=size, num_inference_steps=1),
                  profile.get("edge_timeout"))
    assert result.images.shape == (1, size, size, 3)
    if "truncated_prompts" in result.info:
        assert result.info["truncated_prompts"] == [0], "a 2,000-word prompt must be reported as truncated"
        recorder.note("the target reported the truncation")
    else:
        recorder.note(f"{target.name} does not report truncation")


# Anything at all, except valid-but-expensive numbers (a thousand steps is a fair request, just a slow one,
# and would trip the watchdog): integers are invalid, or small enough to be cheap.
values = st.one_of(st.integers(-2**65, 0), st.integers(1, 64), st.integers(10**4, 2**65),
                   st.floats(allow_nan=True, allow_infinity=True), st.none(), st.text(max_size=5), st.booleans())


@st.composite
def requests(draw, caps):
    """Mostly valid small requests, with one field sometimes replaced by anything at all."""
    fields = {"prompt": draw(st.one_of(st.text(max_size=40), st.lists(st.text(max_size=10), max_size=3))),
              "height": draw(st.sampled_from([16, 32, 48, 64])), "width": draw(st.sampled_from([16, 32, 48, 64])),
              "num_inference_steps": draw(st.integers(1, 2)), "guidance_scale": draw(st.floats(0, 10)),
              "seed": draw(st.one_of(st.none(), st.integers(0, 2**32))), "num_images": draw(st.integers(1, 2))}
    if draw(st.booleans()):
        fields[draw(st.sampled_from(sorted(fields)))] = draw(values)
    return GenerationRequest(**fields)


def test_any_request_gives_images_or_names_its_problem(target, profile, recorder):
    """Property: each request returns images of the asked size and count, or raises InvalidRequest
    naming a field; never TargetError, never a hang; and a normal request still works afterwards."""
    timeout = profile.get("edge_timeout")
    fields = {"prompt", "height", "width", "num_inference_steps", "guidance_scale", "seed", "num_images"}
    seen = {"served": 0, "refused": 0}

    @settings(max_examples=profile.get("hypothesis_examples"), deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(request=requests(target.capabilities))
    def check(request):
        try:
            result = call(target, request, timeout)
        except InvalidRequest as e:
            assert any(f in str(e) for f in fields), f"InvalidRequest names no field: {e}"
            seen["refused"] += 1
            return
        n = len(request.prompts)
        assert result.images.shape == (n, request.height, request.width, 3)
        seen["served"] += 1

    check()
    recorder.metrics("edge.property", seen, "requests")
    assert call(target, GenerationRequest("a cat", 64, 64, 1), timeout).images.shape == (1, 64, 64, 3)


BAD_IMAGES = [  # name, value (or a function of the card and the capabilities), words of the rule
    ("not-an-image", b"plain text, not an image", "identify"),
    ("truncated-png", lambda card, caps: images.encode(card)[:100], "decodable"),
    ("empty-file", b"", "identify"),
    ("no-pixels", np.zeros((0, 64, 3), np.uint8), "no pixels"),
    ("under-16-pixels", np.zeros((8, 8, 3), np.uint8), "from 16"),
    ("huge-sides", lambda card, caps: images.png_header(caps.max_image_side + 1, 64), "from 16 to"),
    ("float-pixels", np.zeros((64, 64, 3), np.float32), "uint8"),
    ("two-channels", np.zeros((64, 64, 2), np.uint8), "RGB"),
    ("a-number", 42, "must be a uint8 array"),
]


@pytest.mark.parametrize("value,rule", [v[1:] for v in BAD_IMAGES], ids=[v[0] for v in BAD_IMAGES])
def test_a_bad_image_is_refused_by_name(editor, make_edit, profile, value, rule):
    request = make_edit()
    value = value(request.image, editor.capabilities) if callable(value) else value
    with pytest.raises(InvalidRequest) as refused:
        call(editor, dataclasses.replace(request, image=value), profile.get("edge_timeout"))
    assert "image" in str(refused.value) and rule in str(refused.value), refused.value


def test_an_image_for_a_text_only_target_is_refused(target, make_request, profile):
    if target.capabilities.images:
        pytest.skip(f"{target.name} takes input images")
    with pytest.raises(InvalidRequest, match="image"):
        call(target, make_request(image=images.card(64, 64)), profile.get("edge_timeout"))


def test_odd_inputs_are_edited(editor, make_edit, profile, recorder):
    """Tiny, strip-shaped and longest-sided inputs: each is fitted (harness.images.fit) and edited."""
    side = editor.capabilities.max_image_side
    odd = {"tiny": (16, 16), "tall-strip": (256, 16), "wide-strip": (16, 256), "longest-side": (side // 16, side)}
    request = make_edit()
    for name, (height, width) in odd.items():
        edit = call(editor, dataclasses.replace(request, image=images.card(height, width)),
                    profile.get("edge_timeout")).images
        assert edit.shape == (1, request.height, request.width, 3), f"{name} input ({width}x{height}): {edit.shape}"
    recorder.metric("edge.odd_inputs_edited", len(odd), "inputs")
