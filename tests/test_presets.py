"""The tiny presets: real-shaped, in the diffusers layout, built once, the same bytes everywhere."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from safetensors.torch import load_file

from helpers import PRESET_NAMES
from targets.reference import presets

# sha256 over every weight tensor (sorted by component and name): a preset must be the same on every
# machine. A change here means VERSION in presets.py must be bumped, or cached presets go stale.
FINGERPRINTS = {"tiny-dev": "103c1a8f8568e0d3", "tiny-schnell": "9628f2dd11ed8dd3"}  # model and its LoRA


def fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    for f in sorted(path.glob("*/*.safetensors")):
        state = load_file(f)
        for key in sorted(state):
            digest.update(key.encode())
            digest.update(state[key].contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_preset_weights_are_fixed(name):
    assert fingerprint(presets.ensure(name)) == FINGERPRINTS[name]


def test_a_rebuild_gives_the_same_bytes(tmp_path):
    assert fingerprint(presets.save(presets.PRESETS["tiny-dev"], tmp_path / "again")) == FINGERPRINTS["tiny-dev"]


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_layout_is_a_flux_directory(name):
    from transformers import AutoConfig

    path = presets.ensure(name)
    index = json.loads((path / "model_index.json").read_text())
    assert index["_class_name"] == "FluxPipeline"
    assert index["transformer"] == ["diffusers", "FluxTransformer2DModel"]
    assert index["vae"] == ["diffusers", "AutoencoderKL"]
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert index["text_encoder_2"] == ["transformers", "T5EncoderModel"]
    assert (path / "loras" / "tiny-style.safetensors").is_file()
    for part in ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"):
        assert (path / part).is_dir(), part
    transformer = json.loads((path / "transformer" / "config.json").read_text())
    assert transformer["in_channels"] == 64 and transformer["guidance_embeds"] == (name == "tiny-dev")
    vae = json.loads((path / "vae" / "config.json").read_text())
    assert vae["latent_channels"] == 16 and 2 ** (len(vae["block_out_channels"]) - 1) == 8
    clip, t5 = AutoConfig.from_pretrained(path / "text_encoder"), AutoConfig.from_pretrained(path / "text_encoder_2")
    assert transformer["pooled_projection_dim"] == clip.hidden_size
    assert transformer["joint_attention_dim"] == t5.d_model
    scheduler = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["use_dynamic_shifting"] == (name == "tiny-dev")


def test_tokenizers_are_local_and_real():
    from transformers import CLIPTokenizer, T5Tokenizer

    path = presets.ensure("tiny-dev")
    clip, t5 = CLIPTokenizer.from_pretrained(path / "tokenizer"), T5Tokenizer.from_pretrained(path / "tokenizer_2")
    assert clip.model_max_length == 77 and t5.model_max_length == 512
    ids = clip("A Cat!").input_ids
    assert ids[0] == clip.bos_token_id and ids[-1] == clip.eos_token_id
    assert clip.decode(ids, skip_special_tokens=True) == "a cat !"  # lowercased; punctuation is its own word
    assert t5.decode(t5("A cat, 42").input_ids, skip_special_tokens=True) == "A cat, 42"
    assert t5.convert_ids_to_tokens(t5("🐱").input_ids) == ["▁", "<unk>", "</s>"]  # unknown, not fatal


def test_built_once_then_loaded(tmp_path, monkeypatch):
    monkeypatch.setenv("FLUXGATE_CACHE", str(tmp_path))
    path = presets.ensure("tiny-schnell")
    stamp = (path / "model_index.json").stat().st_mtime_ns
    monkeypatch.setattr(presets, "save", lambda *a: pytest.fail("a cached preset was rebuilt"))
    assert presets.ensure("tiny-schnell") == path
    assert (path / "model_index.json").stat().st_mtime_ns == stamp
    assert not [p for p in path.parent.iterdir() if ".tmp-" in p.name]  # no half-built leftovers


def test_a_lost_race_keeps_the_winner(tmp_path, monkeypatch):
    # another process renames its build into place first: ours is discarded, theirs is used
    monkeypatch.setenv("FLUXGATE_CACHE", str(tmp_path))
    final = tmp_path / "presets" / f"tiny-dev-v{presets.VERSION}"
    real_save = presets.save

    def save_then_lose(tiny, path):
        real_save(tiny, path)
        real_save(tiny, final)
        return path

    monkeypatch.setattr(presets, "save", save_then_lose)
    assert presets.ensure("tiny-dev") == final
    assert sorted(os.listdir(final.parent)) == [final.name]


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(ValueError, match="tiny-dev"):
        presets.ensure("tiny-devv")
