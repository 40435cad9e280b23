"""Adapter folders (safetensors + JSON) round-trip and refuse what is not theirs; backbone weights resolve."""

from __future__ import annotations

import json
import os

import open_clip
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.test_model import TINY, randomize_trainables, save_tiny_checkpoint, tiny_cfg
from training.adapters import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    AdapterLoadError,
    adapter_model_config,
    load_adapters,
    read_adapter_config,
    save_adapters,
)
from training.model import DiscoVLAConfig, build_model, register_model_configs


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> str:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture
def trained(tiny_checkpoint):
    model = build_model(tiny_cfg(tiny_checkpoint))
    randomize_trainables(model, seed=7)
    return model


@pytest.fixture
def saved(trained, tmp_path):
    return save_adapters(trained, tmp_path / "adapters")


def features(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        z, v = model.encode_video(torch.randn(2, 4, 3, 32, 32, generator=g))
        p = model.encode_pseudo_captions(model.tokenizer(["a cat", "a dog on a sofa"] * 4).view(2, 4, -1))
    return z, v, p


def test_round_trip_restores_features(trained, saved, tiny_checkpoint):
    fresh = build_model(tiny_cfg(tiny_checkpoint))
    assert not torch.allclose(features(fresh)[0], features(trained)[0])
    loaded = load_adapters(fresh, saved)
    assert loaded is fresh
    for a, b in zip(features(loaded), features(trained), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    from_cfg = load_adapters(adapter_model_config(saved, pretrained=tiny_checkpoint), saved)
    torch.testing.assert_close(features(from_cfg)[1], features(trained)[1], atol=0, rtol=0)


def test_folder_contents(trained, saved):
    assert sorted(p.name for p in saved.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    text = (saved / CONFIG_NAME).read_text()
    config = json.loads(text)
    assert text == json.dumps(config, indent=2, sort_keys=True) + "\n"
    assert config["backbone"] == TINY and config["pretrained"] == trained.cfg.pretrained
    assert config["hyper_parameters"] == {"lora_rank": 8, "h_v": 2, "h_l": 1, "num_frames": 4}
    assert config["format_version"] == 1 and "package_version" in config
    tensors = load_file(str(saved / WEIGHTS_NAME))
    assert sum(t.numel() for t in tensors.values()) == trained.trainable_parameters()
    assert all(("lora_" in k) or (".adapter." in k) for k in tensors)  # no frozen CLIP weight is saved
    assert read_adapter_config(saved) == config


@pytest.mark.parametrize(
    "change,match",
    [({"backbone": "ViT-B-32"}, "backbone"), ({"lora_rank": 4}, "lora_rank"), ({"h_v": 1}, "h_v"), ({"h_l": 2}, "h_l")],
)
def test_refuses_other_backbone_or_hyper_parameters(saved, tiny_checkpoint, change, match):
    cfg = tiny_cfg(tiny_checkpoint, **change)
    with pytest.raises(AdapterLoadError, match=match) as err:
        load_adapters(cfg, saved)
    assert CONFIG_NAME in str(err.value)


def test_refuses_missing_or_unexpected_tensors(trained, saved):
    tensors = load_file(str(saved / WEIGHTS_NAME))
    dropped = dict(tensors)
    dropped.pop(next(iter(dropped)))
    save_file(dropped, str(saved / WEIGHTS_NAME))
    with pytest.raises(AdapterLoadError, match="1 missing"):
        load_adapters(trained, saved)
    save_file({**tensors, "clip.visual.proj": torch.zeros(3)}, str(saved / WEIGHTS_NAME))
    with pytest.raises(AdapterLoadError, match="1 unexpected"):
        load_adapters(trained, saved)
    name = next(iter(tensors))
    save_file({**tensors, name: torch.zeros(1)}, str(saved / WEIGHTS_NAME))
    with pytest.raises(AdapterLoadError, match="shape"):
        load_adapters(trained, saved)


def test_refuses_pickles_and_foreign_folders(trained, saved, tmp_path):
    torch.save(trained.adapter_state_dict(), saved / WEIGHTS_NAME)  # a pickle under the right name
    with pytest.raises(AdapterLoadError, match=WEIGHTS_NAME):
        load_adapters(trained, saved)
    os.remove(saved / WEIGHTS_NAME)
    torch.save(trained.adapter_state_dict(), saved / "adapters.pt")
    with pytest.raises(AdapterLoadError, match="pickle"):
        load_adapters(trained, saved)
    foreign = tmp_path / "peft"
    foreign.mkdir()
    (foreign / CONFIG_NAME).write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(AdapterLoadError, match="not a DiscoVLA adapter config"):
        load_adapters(trained, foreign)
    with pytest.raises(AdapterLoadError, match="not found"):
        load_adapters(trained, tmp_path / "nowhere")


def test_checkpoint_by_path_and_torchscript_archive(tiny_checkpoint, tmp_path):
    """A user's checkpoint loads by path: open_clip state dicts and OpenAI-style TorchScript files."""
    register_model_configs()
    ref = open_clip.create_model(TINY, pretrained=tiny_checkpoint, force_quick_gelu=True).eval()
    archive = tmp_path / "tiny_openai_style.pt"
    torch.jit.trace_module(ref, {"encode_image": torch.randn(1, 3, 32, 32)}, check_trace=False).save(str(archive))
    a = build_model(tiny_cfg(tiny_checkpoint))
    b = build_model(tiny_cfg(str(archive)))
    frozen_b = {n: p for n, p in b.named_parameters() if not p.requires_grad}
    frozen_a = {n: p for n, p in a.named_parameters() if not p.requires_grad}
    assert frozen_a.keys() == frozen_b.keys() and len(frozen_a) > 50
    for name, p in frozen_a.items():
        assert torch.equal(p, frozen_b[name]), name


def test_missing_weights_give_an_offline_hint(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(open_clip.factory, "download_pretrained", offline)
    with pytest.raises(RuntimeError, match=r"pretrained='/path/to/ViT-B-32.pt'") as err:
        build_model(DiscoVLAConfig(backbone="ViT-B-32", pretrained="openai"))
    assert "network is unreachable" in str(err.value) and "ViT-B-32.pt" in str(err.value)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        build_model(DiscoVLAConfig(backbone="ViT-B-32", pretrained=str(tmp_path / "missing.pt")))
    bad = tmp_path / "bad.safetensors"
    save_file({"x": torch.zeros(1)}, str(bad))
    with pytest.raises(RuntimeError, match="bad.safetensors"):
        build_model(tiny_cfg(str(bad)))
    with pytest.raises(ValueError, match="unknown backbone"):
        build_model(DiscoVLAConfig(backbone="ViT-Q-99", pretrained=None))
