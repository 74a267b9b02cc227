"""The optimized target on tiny-dev (fp32, CPU): each option takes effect on every module it is for, the
lossless ones draw the plain pipeline's images, the lossy ones stay within the tolerances the README states
(measured beside them), the cache skips what its threshold lets it, and an option this host cannot run is
refused at start, naming it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.target import make_target
from harness.types import GenerationRequest, Unavailable
from runs import SELFTEST, run_suites

REQUEST = GenerationRequest("a red fox in the snow", 64, 64, 4, seed=3)


@pytest.fixture(scope="module")
def plain(started) -> np.ndarray:
    return started("pipeline:preset=tiny-dev").generate(REQUEST).images.astype(int)


def generate(options: str, request: GenerationRequest = REQUEST) -> tuple[dict, dict, np.ndarray]:
    """(evidence, result info, images) of optimized:preset=tiny-dev,OPTIONS for REQUEST."""
    with make_target(f"optimized:preset=tiny-dev,{options}") as target:
        result = target.generate(request)
        return target.describe()["evidence"], result.info, result.images.astype(int)


@pytest.mark.parametrize("options,mean_levels,max_levels", [  # the README's tolerances; measured: 0, 0.35, 0.56
    ("fuse_qkv=1,channels_last=1,attention=math", 0, 0),     # lossless: the same arithmetic, regrouped
    ("quantize=int8wo", 1, 8),
    ("quantize=int8dq", 1, 8),
])
def test_each_option_takes_effect_within_its_tolerance(plain, options, mean_levels, max_levels):
    evidence, info, images = generate(options)
    for name in (o.split("=")[0] for o in options.split(",")):
        assert 0 < evidence[name]["applied"] == evidence[name]["of"], (name, evidence[name])
    diff = np.abs(images - plain)
    assert diff.mean() <= mean_levels and diff.max() <= max_levels, (diff.mean(), diff.max())
    if "quantize" in options:
        assert diff.max() > 0, "int8 weights drew the fp32 image to the bit: the quantized layers did not run"
    if "attention" in options:  # the backend is the target's: other pipelines in this process keep the default
        from diffusers.models.attention_dispatch import _AttentionBackendRegistry

        assert _AttentionBackendRegistry.get_active_backend()[0] == "native"
        assert "aten::_scaled_dot_product_attention_math" in evidence["attention"]["dispatched"], evidence


def test_the_attention_evidence_is_the_kernel_that_ran_not_the_one_asked_for():
    """The profiler's ops of one transformer call: flash asked, flash run; the same target with the ops a
    math target ran (as if the dispatcher had fallen back) is not in effect."""
    with make_target("optimized:preset=tiny-dev,attention=math") as math:
        fallen_back = math.dispatched
    with make_target("optimized:preset=tiny-dev,attention=flash") as flash:
        evidence = flash.describe()["evidence"]["attention"]
        assert any("_scaled_dot_product_flash_attention" in op for op in evidence["dispatched"]), evidence
        assert evidence["applied"] == evidence["of"] > 0
        flash.dispatched = fallen_back
        assert flash.describe()["evidence"]["attention"]["applied"] == 0


def test_the_scheduler_swap_runs_its_own_steps(plain):
    evidence, info, images = generate("scheduler=dpm++,steps=2")
    assert evidence["scheduler"]["class"] == "DPMSolverMultistepScheduler"
    assert info["steps"] == 2 and len(info["sigmas"]) == 3 and info["sigmas"][-1] == 0  # 2 steps, down to 0
    assert info["full_steps"] == 2
    # another trajectory to a like image: measured 10.5 levels from the plain 4 steps (another seed: about 60)
    assert 0.5 < np.abs(images - plain).mean() < 30


def test_the_first_block_cache_skips_the_steps_its_threshold_allows(plain):
    request = GenerationRequest("a red fox in the snow", 64, 64, 8, seed=3)
    _, strict, exact = generate("cache=0.05", request)
    _, loose, cached = generate("cache=1", request)
    assert strict["full_steps"] == 8 > loose["full_steps"] >= 1   # measured: 8 and 2
    assert np.abs(cached - exact).mean() > 1, "the steps the cache skipped changed nothing"


def test_a_cached_target_takes_one_transformer_call_then_a_request_of_another_size(plain):
    """The unit suite calls the transformer alone (at 64²) before requests of the profile's size: the step
    cache must start each afresh (it once kept the single call's residual and failed the next request)."""
    with make_target("optimized:preset=tiny-dev,cache=0.1") as target:
        txt, vec, _ = target.encode(["a cat"])
        img = target.sampling.pack(target.sampling.get_noise([0], 32, 32, target.dtype))
        assert target.velocity(img, txt, vec, sigma=1.0, guidance=3.5, height=32, width=32).shape == img.shape
        assert np.array_equal(target.generate(REQUEST).images, plain)  # 0.1 skips nothing at 4 steps


@pytest.mark.slow  # four runs at cpu-tiny's size (about 13 s on two cores)
def test_the_optimized_profile_passes_int8_where_the_exact_one_fails(tmp_path):
    """cpu-tiny-optimized's tolerances hold int8's error, in one transformer call and in the image, where
    cpu-tiny's exact gates fail it; a bound tighter than int8's error fails the transformer call, and one
    step for four fails the image's."""
    args = ("--category", "unit", "--category", "integration", "-k", "equivalent or stays_near",
            "--target", "optimized:preset=tiny-dev,quantize=int8dq")
    code, output, report = run_suites(*args, "--profile", "cpu-tiny-optimized", out=tmp_path / "lossy")
    assert code == 0, output[-3000:]
    found = {m["name"]: m for t in report["tests"] for m in t["metrics"]}
    assert 1e-3 < found["unit.velocity_rel_error"]["value"] < 0.05 and found["equivalence.max_abs_diff"]["value"] > 1
    code, output, report = run_suites(*args, "--profile", "cpu-tiny", out=tmp_path / "exact")
    assert code == 1 and "equivalence.max_abs_diff" in output, output[-3000:]
    tight = tmp_path / "tight.toml"
    tight.write_text('name = "tight"\nextends = "cpu-tiny-optimized"\n'
                     '[thresholds]\n"unit.velocity_rel_error" = { max = 0.001 }\n')
    code, output, _ = run_suites(*args, "--profile", str(tight), out=tmp_path / "tight")
    assert code == 1 and "unit.velocity_rel_error" in output, output[-3000:]
    code, output, _ = run_suites("--category", "integration", "-k", "equivalent", "--profile", "cpu-tiny-optimized",
                                 "--target", "optimized:preset=tiny-dev,steps=1", out=tmp_path / "one-step")
    assert code == 1 and "equivalence.mean_abs_diff" in output, output[-3000:]  # steps pushed past int8's bounds


@pytest.mark.parametrize("options,error,message", [
    ("quantize=fp8", Unavailable, "quantize=fp8: float8 matmuls need a CUDA GPU; the device is cpu"),
    ("attention=cudnn", Unavailable, "attention=cudnn: a CUDA kernel; the device is cpu"),
    ("attention=flash-attn", Unavailable, "attention=flash-attn: needs the flash-attn package"),
    ("quantize=int4", ValueError, "quantize='int4': must be one of int8wo, int8dq, fp8"),
    ("fuse_qkv=yes", ValueError, "fuse_qkv='yes': must be 1 or 0"),
    ("steps=1.5", ValueError, "steps='1.5': must be 0 (off) or a whole number of at least 1"),
    ("cache=-1", ValueError, "cache='-1': must be 0 (off) or a number of at least 1e-06"),
    ("quantise=int8wo", ValueError, "target 'optimized' has no option 'quantise'"),
    ("compile=reduce-overhead", Unavailable, "compile=reduce-overhead: captures CUDA graphs, which need a CUDA device"),
    ("compile=fast", ValueError, "compile='fast': must be one of default, max-autotune-no-cudagraphs, reduce-overhead"),
    ("regional=1", ValueError, "regional='1': modifies compile, which is not set"),
])
def test_what_cannot_run_here_is_refused_naming_the_option(options, error, message):
    with pytest.raises(error) as refused:
        make_target(f"optimized:preset=tiny-dev,{options}").start()
    assert message in str(refused.value)


def test_a_compile_cache_torch_cannot_load_is_refused_naming_the_file(tmp_path):
    (tmp_path / "mega").write_bytes(b"not a cache")
    with pytest.raises(ValueError, match="compile_cache=.*mega': not a compile cache torch"):
        make_target(f"optimized:preset=tiny-dev,compile=default,compile_cache={tmp_path / 'mega'}").start()


def test_the_unit_suite_fails_an_option_that_did_not_take_effect(tmp_path):
    args = ("--category", "unit", "-k", "optimizations")
    options = "fuse_qkv=1,channels_last=1,quantize=int8wo,scheduler=dpm++,cache=0.1"
    code, output, report = run_suites(*args, "--target", f"optimized:preset=tiny-dev,{options}", out=tmp_path / "ok")
    assert code == 0 and report["tests"][0]["outcome"] == "passed", output[-3000:]
    code, output, report = run_suites(*args, "--target", f"tests.fakes:Unapplied:preset=tiny-dev,{options}",
                                      out=tmp_path / "unapplied")
    assert code == 1, output[-3000:]
    message = report["tests"][0]["message"]
    for unapplied in ("fuse_qkv on 0 of 6", "quantize on 0 of 62", "channels_last on 0 of 42", "scheduler on 0 of 1",
                      "cache on 0 of 6"):
        assert unapplied in message, message
    code, output, _ = run_suites(*args, "--target", "optimized:preset=tiny-dev,quantize=fp8", out=tmp_path / "fp8")
    assert code == 3 and "quantize=fp8: float8 matmuls need a CUDA GPU" in output
    code, output, _ = run_suites(*args, "--target", "optimized:preset=tiny-dev,quantize=int4", out=tmp_path / "int4")
    assert code == 2 and "quantize='int4'" in output


@pytest.mark.slow  # three processes of their own
def test_the_ablation_table_shows_each_row_and_fails_a_cache_pushed_too_far(tmp_path):
    """Each row against the plain pipeline in processes of their own: speed-up with its samples, peak memory,
    quality; a cache threshold far too high (5: every step after the first reuses it) fails the PSNR gate
    that the exact cache (0.05: no step reused at 2 steps) passes."""
    profile = tmp_path / "ablation.toml"
    profile.write_text(f'name = "ablation"\nextends = "{SELFTEST}"\n[settings]\nablation = ["cache=0.05", "cache=5"]\n'
                       '[thresholds]\n"ablation.*.psnr" = { min = 40 }\n')
    code, output, report = run_suites("--category", "performance", "-k", "ablation", "--profile", str(profile),
                                      "--target", "optimized:preset=tiny-dev,cache=0.05", out=tmp_path)
    assert code == 1, output[-3000:]
    found = {m["name"]: m for m in report["tests"][0]["metrics"]}
    assert found["ablation.cache=0.05.psnr"]["verdict"] == "pass" and found["ablation.cache=0.05.psnr"]["value"] == 100
    assert found["ablation.cache=5.psnr"]["verdict"] == "fail", found["ablation.cache=5.psnr"]
    for row in ("cache=0.05", "cache=5"):
        assert found[f"ablation.{row}.speedup"]["n"] == 3 and found[f"ablation.{row}.peak_host"]["value"] > 100
    html = next(tmp_path.glob("*/report.html")).read_text()
    table = html[html.index('<h2 id="ablation">'):html.index("</table>", html.index('<h2 id="ablation">'))]
    assert table.count("<tr>") == 3 and "cache=5" in table and 'class="tag fail"' in table


def test_the_ablation_rows_are_the_targets_options_alone_then_together():
    from suites.performance.test_ablation import rows_of

    class Profile:
        def __init__(self, rows):
            self.rows = rows

        def get(self, key):
            return self.rows

    target = make_target("optimized:preset=tiny-dev,quantize=int8wo,fuse_qkv=1,cache=0.1")
    assert rows_of(target, Profile([])) == ["quantize=int8wo", "fuse_qkv=1", "cache=0.1",
                                            "quantize=int8wo,fuse_qkv=1,cache=0.1"]
    assert rows_of(make_target("optimized:preset=tiny-dev,fuse_qkv=1"), Profile([])) == ["fuse_qkv=1"]
    assert rows_of(target, Profile(["steps=2"])) == ["steps=2"]
    compiled = make_target("optimized:preset=tiny-dev,fuse_qkv=1,compile=default,regional=1,compile_cache=c.bin")
    assert rows_of(compiled, Profile([])) == ["fuse_qkv=1", "compile=default,regional=1,compile_cache=c.bin",
                                              "fuse_qkv=1,compile=default,regional=1,compile_cache=c.bin"]


def test_compilation_and_its_cache_file_show_in_the_evidence_and_one_never_read_does_not(tmp_path):
    """compile sets every module it is for to compile at its first call; a cache file found at start is loaded
    (a real one: torch.compiler's artifacts of a small compiled function), and the evidence says whether it
    was. tests.fakes:Uncached finds the file and never reads it."""
    torch.compile(lambda x: x * 2 + 1)(torch.ones(4))
    (tmp_path / "mega").write_bytes(torch.compiler.save_cache_artifacts()[0])
    options = f"preset=tiny-dev,compile=default,regional=1,compile_cache={tmp_path / 'mega'}"
    with make_target(f"optimized:{options}") as target:
        evidence = target.describe()["evidence"]
    assert {name: (e["applied"], e["of"]) for name, e in evidence.items()} == \
        {"compile": (6, 6), "regional": (6, 6), "compile_cache": (1, 1)}
    assert evidence["compile_cache"]["loaded_bytes"] == (tmp_path / "mega").stat().st_size
    with make_target(f"tests.fakes:Uncached:{options}") as target:
        unread = target.describe()["evidence"]["compile_cache"]
    assert unread["found"] and (unread["applied"], unread["loaded_bytes"]) == (0, 0), unread


@pytest.mark.slow  # two fresh processes compile with empty Inductor caches (about 25 s apiece on two cores)
def test_the_compile_cache_shortens_a_cold_start_and_its_gate_holds(tmp_path):
    """compile=default,regional=1: a second fresh process with an empty Inductor cache compiles faster from
    the file the first one wrote, and the gate on the saving passes."""
    profile = tmp_path / "compile.toml"
    profile.write_text(f'name = "compile"\nextends = "{SELFTEST}"\n'
                       '[thresholds]\n"compile.cache_saving" = { min = 0.1 }\n')
    code, output, report = run_suites("--category", "performance", "-k", "compile_cache", "--profile", str(profile),
                                      "--target", "optimized:preset=tiny-dev,compile=default,regional=1",
                                      out=tmp_path)
    assert code == 0, output[-3000:]
    found = {m["name"]: m for m in report["tests"][0]["metrics"]}
    assert found["compile.cache_saving"]["verdict"] == "pass", found["compile.cache_saving"]
    assert found["compile.first_request.cached"]["value"] < found["compile.first_request.uncached"]["value"]
    assert "MiB cache file" in report["tests"][0]["notes"][0]
