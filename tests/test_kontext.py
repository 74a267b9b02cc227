"""Editing with FLUX.1-Kontext: the input image's rules and size, the reference's conditioning against diffusers'
FluxKontextPipeline (equal in fp32, and shown to differ when the reference drifts), golden keys by pixels, and
the suites passing on tiny-kontext in process."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from harness import images
from harness.golden import request_fields
from harness.target import Capabilities, check_request
from harness.types import InvalidRequest
from helpers import assert_equivalent, request
from runs import metrics, run_suites
from targets.reference import sampling, target as reference_target

CARD = images.card(96, 160)  # not square: the preferred size is chosen by its aspect ratio


@pytest.mark.parametrize("height,width,fitted", [
    (1024, 1024, (1024, 1024)),
    (96, 160, (800, 1328)),    # 5:3
    (60, 100, (720, 1456)),    # floored to 48x96 before the ratio is read, as diffusers does: 2:1, not 5:3
    (16, 4096, (672, 1568)),   # past the widest: the widest
])
def test_the_preferred_fit_is_kontexts_nearest_resolution(height, width, fitted):
    assert images.fit(height, width, "preferred", (64, 64)) == fitted
    assert images.fit(height, width, "request", (64, 48)) == (64, 48)


def test_every_form_of_an_image_is_the_same_pixels(tmp_path):
    png = images.encode(CARD)
    (tmp_path / "card.png").write_bytes(png)
    for form in (CARD, png, tmp_path / "card.png", str(tmp_path / "card.png"),
                 np.dstack([CARD, np.full(CARD.shape[:2], 255, np.uint8)])):  # RGBA, opaque
        assert np.array_equal(images.pixels(form), CARD)
    grey = CARD[..., 0]
    assert np.array_equal(images.pixels(grey), np.repeat(grey[..., None], 3, axis=2))
    key = request_fields(request(image=CARD))["image"]
    assert request_fields(request(image=png))["image"] == key != request_fields(request(image=CARD[::-1]))["image"]


def test_the_rules_name_the_image():
    caps = Capabilities(images=True)
    with pytest.raises(InvalidRequest, match="image=<uint8 array 96x160x3>: this target does not take"):
        check_request(request(image=CARD), Capabilities())
    with pytest.raises(InvalidRequest, match="image_fit='stretch': must be one of 'preferred', 'request'"):
        check_request(request(image=CARD, image_fit="stretch"), caps)
    with pytest.raises(InvalidRequest, match=r"image=<45 bytes>: is 4097x16; each side must be from 16 to 4096"):
        check_request(request(image=images.png_header(4097, 16)), caps)
    with pytest.raises(InvalidRequest, match="no such file"):
        check_request(request(image="/no/such/image.png"), caps)
    with pytest.raises(InvalidRequest, match=r"image_fit=\['preferred'\]: must be one of"):
        check_request(request(image=CARD, image_fit=["preferred"]), caps)
    check_request(request(image=CARD), caps)
    # the input's tokens count towards the pixel budget, once per image: eight 1024² fill it alone
    check_request(request(height=1024, width=1024, num_images=8), caps)
    with pytest.raises(InvalidRequest, match=r"image=.*8 image\(s\) of 1024x1024, each with the input at 1328x800"):
        check_request(request(height=1024, width=1024, num_images=8, image=CARD), caps)


@pytest.fixture(scope="module")
def pair(started):
    return started("reference:preset=tiny-kontext"), started("pipeline:preset=tiny-kontext")


def test_text_to_image_through_kontext_equals_the_reference(pair):
    assert assert_equivalent(*pair, request()) == 0


def test_the_vae_encoders_agree(pair):
    reference, pipeline = pair
    assert torch.equal(reference.encode_image(CARD), pipeline.encode_image(CARD))


@pytest.mark.parametrize("fit,steps", [("request", 3), ("preferred", 1)])
def test_an_edit_equals_diffusers_kontext(pair, fit, steps):
    """"preferred" leaves the resize to diffusers (800x1328 by Lanczos), so the reference's own choice and
    resampling are checked too; one step at about 1 MP of conditioning keeps it to seconds."""
    assert assert_equivalent(*pair, request(image=CARD, image_fit=fit, num_inference_steps=steps, seed=4,
                                            height=48, width=80)) == 0


def encode_unnormalized(self, image):
    """encode_image with the input left in [0, 1] instead of [-1, 1]."""
    vae = self.parts.vae
    x = torch.from_numpy(image[None].astype(np.float32) / 255).permute(0, 3, 1, 2)
    return (vae.encode(x).latent_dist.mode() - vae.config.shift_factor) * vae.config.scaling_factor


DRIFTS = {  # a flaw a Kontext reference could have -> (owner, attribute, replacement, fit)
    "conditioning-ids-at-t0": (reference_target, "img_ids", lambda h, w, t=0: sampling.img_ids(h, w), "request"),
    "input-not-normalised": (reference_target.ReferenceTarget, "encode_image", encode_unnormalized, "request"),
    "bilinear-resize": (images, "resized", lambda im, h, w: np.asarray(
        Image.fromarray(im).resize((w, h), resample=Image.Resampling.BILINEAR)), "preferred"),
}


@pytest.mark.parametrize("drift", DRIFTS)
def test_the_equivalence_catches_a_drifted_kontext_reference(pair, monkeypatch, drift):
    owner, name, replacement, fit = DRIFTS[drift]
    monkeypatch.setattr(owner, name, replacement)
    with pytest.raises(AssertionError):
        assert_equivalent(*pair, request(image=CARD, image_fit=fit, num_inference_steps=1, seed=4))


EDIT_TESTS = {"test_vae_encode", "test_conditioning_tokens_and_ids",
              "test_edits_similar_to_the_references_over_prompts", "test_an_edit_that_asks_for_no_change_keeps_the_input"}


def test_the_suites_edit_through_diffusers_kontext(tmp_path):
    """The suites' edit tests of diffusers' pieces and of image quality, on tiny-kontext in process (the
    integration, edge-case and stress suites' edit tests run through the service and Triton; the
    equivalence of edits above)."""
    code, output, report = run_suites("--target", "pipeline:preset=tiny-kontext", "--category", "unit",
                                      "--category", "quality", "-k", " or ".join(EDIT_TESTS), out=tmp_path)
    assert code == 0, output[-3000:]
    assert report["target"]["capabilities"]["images"]
    passed = {t["nodeid"].split("::")[1].split("[")[0] for t in report["tests"] if t["verdict"] == "pass"}
    assert passed == EDIT_TESTS, passed ^ EDIT_TESTS
    assert metrics(report, "test_edits_similar_to_the_references_over_prompts")["quality.psnr.min"] == 100
