"""The registry and SPEC strings: lazy imports, helpful errors, options passed through."""
from __future__ import annotations

import subprocess
import sys

import pytest

from harness.target import TARGETS, Target, get_target_class, make_target, parse_spec, register_target


def test_parse_spec():
    assert parse_spec("reference") == ("reference", {})
    assert parse_spec("reference:preset=tiny-dev, dtype=bf16") == ("reference", {"preset": "tiny-dev", "dtype": "bf16"})
    with pytest.raises(ValueError, match="'dtype' is not key=value"):
        parse_spec("reference:dtype")


@pytest.mark.parametrize("spec,parsed", [
    ("http://127.0.0.1:8000?protocol=openai", ("http", {"url": "http://127.0.0.1:8000", "protocol": "openai"})),
    ("https://flux.example/v1?protocol=raw&timeout=30",
     ("https", {"url": "https://flux.example/v1", "protocol": "raw", "timeout": "30"})),
    ("triton://127.0.0.1:8001?model=flux", ("triton", {"url": "triton://127.0.0.1:8001", "model": "flux"})),
    ("modal://workspace/app/function", ("modal", {"url": "modal://workspace/app/function"})),
    ("mypkg.targets:MyTarget", ("mypkg.targets:MyTarget", {})),
    ("mypkg.targets:MyTarget:size=2,mode=fast", ("mypkg.targets:MyTarget", {"size": "2", "mode": "fast"})),
])
def test_parse_spec_url_and_module_forms(spec, parsed):
    assert parse_spec(spec) == parsed


def test_a_target_by_module_path():
    target = make_target("tests.fakes:Flawed:delay=0.25,preset=tiny-schnell")
    assert target.delay == 0.25 and target.preset == "tiny-schnell" and target.spec.startswith("tests.fakes")
    with pytest.raises(ValueError, match="not a Target subclass"):
        make_target("harness.types:GenerationRequest")


def test_targets_import_only_when_chosen():
    # the harness must not pay for torch or diffusers until a target that needs them is picked
    code = ("import sys, harness.target as t; assert 'torch' not in sys.modules; "
            "t.get_target_class('pipeline'); assert 'torch' in sys.modules and 'diffusers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_target_suggests_a_name():
    with pytest.raises(ValueError, match="did you mean 'reference'"):
        get_target_class("refrence")


def test_register_a_target_of_ones_own():
    @register_target("echo-test")
    class Echo(Target):
        def generate(self, request):
            raise NotImplementedError

    try:
        assert isinstance(make_target("echo-test"), Echo)
    finally:
        del TARGETS["echo-test"]


@pytest.mark.parametrize("spec,error,match", [
    ("reference:dtype=fp8", ValueError, "dtype='fp8'"),
    ("reference:device=cuda:7", ValueError, "CUDA is not available"),
    ("reference:model=/nowhere/flux", FileNotFoundError, "/nowhere/flux"),
    ("reference:preset=tiny-dev,model=/x", ValueError, "exactly one"),
    ("pipeline:preset=huge", ValueError, "preset='huge'"),
    ("reference:max_sequence_length=0", ValueError, "max_sequence_length"),
    ("reference:colour=red", ValueError, "no option 'colour' .options: preset, model"),
])
def test_bad_options_name_the_value(spec, error, match):
    with pytest.raises(error, match=match):
        make_target(spec)


def test_default_reference_is_tiny_dev():
    target = make_target("reference")
    assert target.preset == "tiny-dev" and not target.capabilities.local_gpu
