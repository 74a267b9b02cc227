"""The learned metrics, loaded by their libraries' own code from small random-weight files in the real formats
(tests/tiny_weights.py): the property each must have, the convention CLIP score follows, merging FID from
shards, and a missing weight named with the files looked for."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from harness.metrics.distribution import Inception, cmmd, fid
from harness.metrics.perceptual import LPIPS
from harness.metrics.semantic import CLIP, score
from harness.metrics.weights import Missing
from runs import SELFTEST, captured, run_suites
from tiny_weights import write_clip, write_inception, write_lpips_backbone

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)


def noisy(images: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, images.shape)
    return np.clip(images + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Tiny weights under a private $FLUXGATE_WEIGHTS, and an empty torch hub (a developer's own downloads
    must not stand in for them); the tiny CLIP's model name."""
    root, hub = tmp_path_factory.mktemp("weights"), tmp_path_factory.mktemp("torch-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLUXGATE_WEIGHTS", str(root))
        mp.setenv("TORCH_HOME", str(hub))
        write_lpips_backbone(root)
        write_inception(root)
        yield write_clip(root / "tiny-clip")


@pytest.fixture(scope="module")
def features(weights):
    """Inception features of the images, and of the same images with noise of sigma 10 and 40 levels: the
    first pool's 64, as FID's 2048 would cost seconds an eigendecomposition with the same code path."""
    inception = Inception(features=64)
    return {s: inception(noisy(IMAGES, s) if s else IMAGES) for s in (0, 10, 40)}


def test_lpips_is_0_for_identical_images_and_grows_with_noise(weights):
    lpips = LPIPS("alex")
    same, some, more = (lpips(IMAGES, noisy(IMAGES, s) if s else IMAGES) for s in (0, 10, 40))
    assert same.shape == (4,) and (same == 0).all()
    assert (some > 0).all() and (more > some).all()


def test_fid_is_about_0_for_one_set_and_grows_with_noise(features):
    same, some, more = (fid(features[0], features[s]) for s in (0, 10, 40))
    assert abs(same) < 1e-3 * some and 0 < some < more


def test_fid_of_two_shards_merged_is_the_fid_of_the_whole(features):
    whole = fid(features[0], features[40])
    halves = [(features[0][i:i + 2], features[40][i:i + 2]) for i in (0, 2)]
    merged = fid(np.concatenate([a for a, _ in halves]), np.concatenate([b for _, b in halves]))
    assert merged == pytest.approx(whole, rel=1e-9)
    averaged = np.mean([fid(a, b) for a, b in halves])  # what merging must not be
    assert abs(averaged - whole) > 0.01 * whole


def test_cmmd_is_0_for_one_set_and_above_0_between_two(weights):
    clip = CLIP(weights, "")
    base, other = clip.images(IMAGES), clip.images(np.random.default_rng(5).integers(0, 256, IMAGES.shape, np.uint8))
    assert cmmd(base, base) == 0 and cmmd(base, other) > 0
    assert cmmd(base, base[::-1]) != 0  # rows are paired: the same set in another order is not "one set"


def test_cmmd_is_unbiased_at_four_images_a_set():
    """Two sets of 4 from one distribution average 0 over many draws (a biased estimate sits well above); sets
    from two distributions do not."""
    rng = np.random.default_rng(0)

    def unit(n, shift=0.0):
        x = rng.normal(size=(n, 8)) + shift
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    same = np.array([cmmd(unit(4), unit(4)) for _ in range(400)])
    apart = np.array([cmmd(unit(4), unit(4, shift=1.0)) for _ in range(400)])
    error = same.std() / np.sqrt(len(same))
    assert abs(same.mean()) < 3 * error and apart.mean() > 10 * error


def test_clip_score_is_100_times_the_cosine_clamped_at_0(weights):
    clip = CLIP(weights, "")
    prompts = ["a red fox", "a cat", "a sign", "a city"]
    found = clip.score(IMAGES, prompts)
    image = clip.model.encode_image(torch_images(clip, IMAGES))
    text = clip.model.encode_text(clip.tokenizer(prompts))
    cosine = (image * text).sum(1) / (image.norm(dim=1) * text.norm(dim=1))
    assert found == pytest.approx(100 * cosine.clamp(min=0).detach().numpy(), abs=1e-4)
    assert score(np.array([[1.0, 0], [0.6, 0.8], [-1.0, 0]]), np.array([[1.0, 0], [1.0, 0], [1.0, 0]])).tolist() \
        == pytest.approx([100, 60, 0])


def torch_images(clip: CLIP, images: np.ndarray):
    import torch
    from PIL import Image

    return torch.stack([clip.preprocess(Image.fromarray(im)) for im in images])


def test_a_missing_weight_names_every_file_looked_for(tmp_path, monkeypatch):
    monkeypatch.setenv("FLUXGATE_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(Missing) as lpips:
        LPIPS("alex")
    assert lpips.value.paths == [str(tmp_path / "weights/hub/checkpoints/alexnet-owt-7be5be79.pth"),
                                 str(tmp_path / "torch/hub/checkpoints/alexnet-owt-7be5be79.pth")]
    with pytest.raises(Missing, match="weights-inception-2015-12-05-6726825d.pth"):
        Inception()
    with pytest.raises(Missing) as clip:
        CLIP("ViT-L-14", "openai")
    assert str(tmp_path / "weights/open_clip/ViT-L-14/openai.safetensors") in clip.value.paths
    assert any("timm/vit_large_patch14_clip_224.openai" in p for p in clip.value.paths)  # the Hugging Face cache
    with pytest.raises(Missing, match="/no/such/file.safetensors"):
        CLIP("ViT-B-32", "/no/such/file.safetensors")
    with pytest.raises(ValueError, match="lpips_net='squeezy'"):
        LPIPS("squeezy")


def learned(tmp_path: Path, clip: str, pretrained: str = "", require: str = "", thresholds: str = "") -> str:
    """The self-test profile with the learned metrics' settings (and REQUIRE, a TOML list; THRESHOLDS, TOML
    lines), over 4 prompts: FID needs 2 a set, and the shards test splits them in two."""
    path = tmp_path / "learned.toml"
    path.write_text(f'name = "learned"\nextends = "{SELFTEST}"\n{f"require = {require}" if require else ""}\n'
                    f'[settings]\nclip_model = "{clip}"\nclip_pretrained = "{pretrained}"\nquality_prompts = 4\n'
                    f'[thresholds]\n{thresholds}')
    return str(path)


FLOOR_GATES = "".join(f'"quality.{m}.over_floor" = {{ max = 3 }}\n' for m in ("lpips", "fid", "cmmd"))


@pytest.mark.slow  # the quality suite with every learned metric's network (about 10 s on two cores)
def test_the_quality_suite_records_every_learned_metric_and_gates_on_the_floor(weights, tmp_path):
    profile = learned(tmp_path, weights, thresholds=FLOOR_GATES)
    args = ("--category", "quality", "-k", "learned", "--profile", profile)
    code, output, report = run_suites(*args, out=tmp_path / "run")
    assert code == 0, output[-3000:]
    found = {m["name"]: m for t in report["tests"] for m in t["metrics"]}
    assert {"quality.lpips.mean", "quality.lpips.max", "clip_score", "clip_score.reference", "clip_score.delta",
            "quality.cmmd", "quality.fid"} <= set(found)
    assert 0 <= found["quality.lpips.mean"]["value"] <= found["quality.lpips.max"]["value"]
    assert 0 <= found["clip_score"]["value"] <= 100
    assert found["quality.lpips.floor"]["value"] == 0  # fp32 on a CPU: a batch of two draws each image exactly
    for metric in ("lpips", "fid", "cmmd"):  # the pipeline draws the reference's images: no distance at all
        assert found[f"quality.{metric}.over_floor"]["verdict"] == "pass"
    fid_test = next(t for t in report["tests"] if "test_fid" in t["nodeid"])
    kept = np.load(next(tmp_path.glob("run/*")) / fid_test["artifacts"][0]["path"])
    assert kept["target"].shape == kept["reference"].shape == kept["floor"].shape == (4, 64)  # 4 prompts

    code, output, report = run_suites(*args, "--target", "tests.fakes:Flawed:colour_shift=40", out=tmp_path / "red")
    assert code == 1, output[-3000:]
    found = {m["name"]: m for t in report["tests"] for m in t["metrics"]}
    for metric in ("lpips", "fid", "cmmd"):  # a red cast moves every image one way: a shift of the distribution
        assert found[f"quality.{metric}.over_floor"]["verdict"] == "fail", found[f"quality.{metric}.over_floor"]


def test_a_distance_is_read_against_its_floor():
    from harness.metrics.floor import RESOLUTION, over

    assert over(0.3, 0.1) == pytest.approx(3)
    assert over(2e-4, -1e-4) == pytest.approx(2)     # an unbiased floor below 0: its size is the noise
    assert over(0.0, 0.0) == 0                       # an exact target against an exact floor
    assert over(1e-4, 0.0) == pytest.approx(1e-4 / RESOLUTION)   # any distance where the floor is exact: far over


def test_without_weights_each_learned_metric_skips_naming_its_file_unless_required(tmp_path, monkeypatch):
    monkeypatch.setenv("FLUXGATE_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    args = ("--category", "quality", "-k", "learned")
    code, output, report = run_suites(*args, "--profile", learned(tmp_path, "ViT-B-32", "openai"), out=tmp_path / "free")
    assert code == 0, output[-3000:]
    skips = {t["nodeid"].split("::")[1]: t["skip_reason"] for t in report["tests"]}
    assert str(tmp_path / "weights/hub/checkpoints/alexnet-owt-7be5be79.pth") in skips["test_lpips_against_the_reference"]
    assert str(tmp_path / "weights/open_clip/ViT-B-32/openai.safetensors") in skips["test_clip_score"]
    assert "weights-inception-2015-12-05-6726825d.pth" in skips["test_fid_between_the_image_sets"]
    code, output, report = run_suites(*args, "--profile", learned(tmp_path, "ViT-B-32", "openai", '["lpips"]'),
                                      out=tmp_path / "required")
    assert code == 1
    lpips = next(t for t in report["tests"] if "test_lpips" in t["nodeid"])
    assert lpips["verdict"] == "fail" and "requires lpips" in lpips["message"]
    assert "alexnet-owt-7be5be79.pth" in lpips["message"]


def test_the_listing_says_what_is_found_and_what_is_missing_and_fetch_stays_offline(weights, tmp_path):
    from harness.metrics.__main__ import main

    profile = learned(tmp_path, weights)
    code, output = captured(main, ["--profile", profile])
    assert code == 0, output
    assert f"found    lpips (alex): {os.environ['FLUXGATE_WEIGHTS']}/hub/checkpoints/alexnet-owt-7be5be79.pth" in output
    assert f"found    clip_score ({weights}, ): {weights.removeprefix('local-dir:')}" in output
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLUXGATE_WEIGHTS", str(tmp_path / "none"))
        code, output = captured(main, ["--profile", profile])
        assert code == 1 and "missing  fid (InceptionV3): looked for " + str(tmp_path / "none") in output
        code, output = captured(main, ["fetch"])  # the tests run with HF_HUB_OFFLINE=1 (tests/conftest.py)
        assert code == 1 and "HF_HUB_OFFLINE is set, so nothing is downloaded" in output
    code, output = captured(main, ["--profile", learned(tmp_path, "ViT-B-32")])
    assert code == 2 and "clip_pretrained='' for clip_model='ViT-B-32'" in output


def test_runs_over_shards_of_a_prompt_set_merge_into_the_whole_sets_fid_and_cmmd(weights, tmp_path):
    from harness.metrics.__main__ import main
    from reports import merge

    runs = {}
    for name, shard in (("whole", ()), ("first", ("--shard", "1/2")), ("second", ("--shard", "2/2"))):
        # each shard draws 2 of the 4 prompts' images, and finds them among the whole set's golden images
        code, output, report = run_suites("--category", "quality", "-k", "fid or cmmd", *shard,
                                          "--profile", learned(tmp_path, weights), out=tmp_path / name)
        assert code == 0, output[-3000:]
        runs[name] = (next((tmp_path / name).iterdir()), {m["name"]: m["value"] for t in report["tests"]
                                                          for m in t["metrics"]})
    code, output = captured(main, ["merge", str(runs["first"][0]), str(runs["second"][0] / "report.json")])
    assert code == 0, output
    merged = {line.split(" = ")[0]: float(line.split(" = ")[1].split()[0]) for line in output.splitlines()}
    whole = runs["whole"][1]
    assert merged["quality.fid"] == pytest.approx(whole["quality.fid"], rel=1e-5)   # printed to 6 digits
    assert merged["quality.cmmd"] == pytest.approx(whole["quality.cmmd"], rel=1e-5, abs=1e-9)
    assert merged["quality.fid.floor"] == pytest.approx(whole["quality.fid.floor"], rel=1e-5, abs=1e-9)
    assert "over 4 images (2 + 2 from 2 runs)" in output
    shards = [runs[n][1]["quality.fid"] for n in ("first", "second")]
    assert abs(np.mean(shards) - whole["quality.fid"]) > 0.01 * whole["quality.fid"]  # what merging is not
    code, output = captured(main, ["merge", str(runs["first"][0])])
    assert code == 2 and "give two runs or more" in output
    code, output = captured(merge.main, [str(runs["first"][0]), str(runs["second"][0]), "--out", str(tmp_path / "all")])
    assert code == 0, output
    found = {m["name"]: m for t in json.loads((tmp_path / "all" / "report.json").read_text())["tests"]
             for m in t["metrics"]}
    for name in ("quality.fid", "quality.fid.floor", "quality.fid.over_floor", "quality.cmmd", "quality.cmmd.floor"):
        assert found[name]["value"] == pytest.approx(whole[name], rel=1e-9, abs=1e-12), name  # exactly, not printed
        assert found[name]["n"] == 4 and found[name]["note"] is None
