"""Adapter folders (safetensors + JSON) round-trip and refuse what is not theirs; backbone weights resolve."""

from __future__ import annotations

import dataclasses
import json
import os

import open_clip
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers import TINY, randomize_trainables, save_tiny_checkpoint, tiny_cfg
from training.adapters import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    AdapterLoadError,
    adapter_model_config,
    adapter_parameters,
    load_adapters,
    lora_merged,
    parameter_groups,
    read_adapter_config,
    save_adapters,
)
from training.lora import LoRAAttention, merge_lora
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
    assert config["model"] == dataclasses.asdict(trained.cfg)  # the whole model config, every field
    assert config["model"]["backbone"] == TINY and config["model"]["num_frames"] == 4
    assert config["format_version"] == 2 and "package_version" in config
    assert config["parameter_groups"] == trained.parameter_groups()
    tensors = load_file(str(saved / WEIGHTS_NAME))
    assert sum(t.numel() for t in tensors.values()) == trained.trainable_parameters()
    assert all(("lora_" in k) or (".adapter." in k) for k in tensors)  # no frozen CLIP weight is saved
    assert read_adapter_config(saved) == config


@pytest.mark.parametrize(
    "change,match",
    [
        ({"backbone": "ViT-B-32"}, "backbone"),
        ({"lora_rank": 4}, "lora_rank"),
        ({"h_v": 1}, "h_v"),
        ({"h_l": 2}, "h_l"),
    ],
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
    torch.jit.trace_module(ref, {"encode_image": torch.randn(1, 3, 32, 32)}, check_trace=False).save(
        str(archive)
    )
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


# ---------------------------------------------------------------- adapters by module type, config versions
def test_adapters_are_identified_by_module_type_not_requires_grad(trained, tmp_path):
    """Freezing an adapter or unfreezing a CLIP weight changes neither what is saved nor the groups."""
    expected = dict(adapter_parameters(trained))
    assert expected and all(("lora_" in n) or (".adapter." in n) for n in expected)
    assert {n for n, p in trained.named_parameters() if p.requires_grad} == set(expected)
    groups_before = trained.parameter_groups()
    next(iter(expected.values())).requires_grad_(False)
    trained.clip.visual.proj.requires_grad_(True)
    assert list(adapter_parameters(trained)) == list(expected)
    assert trained.parameter_groups() == groups_before
    saved = load_file(str(save_adapters(trained, tmp_path / "a") / WEIGHTS_NAME))
    assert sorted(saved) == sorted(expected)


def test_parameter_groups_split_by_tower_and_kind(trained):
    groups = parameter_groups(trained)
    assert list(groups) == ["vision_lora", "vision_adapters", "text_lora", "text_adapters"]
    assert all(n.startswith("clip.visual.") for n in groups["vision_lora"] | groups["vision_adapters"])
    assert not any(n.startswith("clip.visual.") for n in groups["text_lora"] | groups["text_adapters"])
    assert all(n.endswith(("lora_A", "lora_B")) for g in ("vision_lora", "text_lora") for n in groups[g])
    assert all(".adapter." in n for g in ("vision_adapters", "text_adapters") for n in groups[g])
    # tiny: 4 blocks per tower (2 LoRA tensors each), h_v = 2 and h_l = 1 fusion adapters (4 tensors each)
    assert [len(g) for g in groups.values()] == [8, 8, 8, 4]
    assert {g: sum(p.numel() for p in ps.values()) for g, ps in groups.items()} == trained.parameter_groups()


def test_version_1_folder_still_loads(trained, saved, tiny_checkpoint):
    """A folder written before the whole config was stored (format_version 1) keeps loading."""
    cfg = trained.cfg
    v1 = {
        "format": "discovla-adapters",
        "format_version": 1,
        "package_version": "0.1.0",
        "backbone": cfg.backbone,
        "pretrained": cfg.pretrained,
        "max_words": cfg.max_words,
        "quick_gelu": cfg.quick_gelu,
        "hyper_parameters": {"lora_rank": 8, "h_v": 2, "h_l": 1, "num_frames": 4},
        "trainable_parameters": 1,
    }
    (saved / CONFIG_NAME).write_text(json.dumps(v1))
    assert adapter_model_config(saved) == cfg
    loaded = load_adapters(adapter_model_config(saved), saved)
    torch.testing.assert_close(features(loaded)[1], features(trained)[1], atol=0, rtol=0)


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda c: c.update(format_version=3), r"format_version 3 .*reads versions \[1, 2\]"),
        (
            lambda c: c["model"].update(temporal_depth=2),
            r"unknown model config field\(s\) \['temporal_depth'\]",
        ),
        (lambda c: c["model"].update(lora_rank="8"), r"lora_rank='8', expected <class 'int'>"),
        (lambda c: c["model"].update(quick_gelu=1), r"quick_gelu=1"),
        (lambda c: c["model"].update(h_v=-1), r"h_v must be >= 0"),
        (lambda c: c.update(model=[1, 2]), r"'model' must hold the model config"),
    ],
)
def test_refuses_other_versions_and_bad_model_configs(saved, edit, match):
    config = json.loads((saved / CONFIG_NAME).read_text())
    edit(config)
    (saved / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(AdapterLoadError, match=match) as err:
        adapter_model_config(saved)
    assert CONFIG_NAME in str(err.value)


def test_a_new_field_round_trips_without_code_in_the_loader(saved, tiny_checkpoint):
    """Every DiscoVLAConfig field travels: a non-default value of any field comes back as saved."""
    cfg = tiny_cfg(tiny_checkpoint, max_words=16, quick_gelu=False, lean_mlp=False, num_frames=3)
    model = build_model(cfg)
    folder = save_adapters(model, saved.parent / "other")
    assert adapter_model_config(folder) == cfg


# ---------------------------------------------------------------- merge_lora
def test_merge_lora_keeps_outputs_and_leaves_no_lora(trained, saved):
    before = features(trained, seed=3)
    with torch.no_grad():
        text_before = trained.encode_text(trained.tokenizer(["a red circle turns blue"]))
    merged = merge_lora(trained)
    assert merged is trained and lora_merged(merged)
    assert not any(n.endswith(("lora_A", "lora_B")) for n, _ in merged.named_parameters())
    assert all(m.lora_A is None for m in merged.modules() if isinstance(m, LoRAAttention))
    groups = merged.parameter_groups()
    assert (
        groups["vision_lora"] == groups["text_lora"] == 0 and groups["vision_adapters"] > 0
    )  # IVFusion stays
    for a, b in zip(features(merged, seed=3), before, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(
            merged.encode_text(merged.tokenizer(["a red circle turns blue"])),
            text_before,
            atol=1e-5,
            rtol=1e-4,
        )
    with pytest.raises(ValueError, match="merge"):
        save_adapters(merged, saved.parent / "merged")
    with pytest.raises(AdapterLoadError, match="already merged"):
        load_adapters(merged, saved)


def test_merge_lora_changes_the_frozen_projection_by_b_times_a(trained):
    block = trained.clip.visual.transformer.resblocks[0].attn
    w, a, b = (
        block.base_layer.in_proj_weight.clone(),
        block.lora_A.detach().clone(),
        block.lora_B.detach().clone(),
    )
    merge_lora(trained)
    torch.testing.assert_close(block.base_layer.in_proj_weight, w + b @ a, atol=1e-6, rtol=1e-6)
