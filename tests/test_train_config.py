"""Presets, overrides, validation, the saved resolved config and the pipelines.train CLI (dry run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipelines.train import main as train_main
from training.config import (
    ConfigError,
    format_config,
    list_presets,
    parse_override,
    resolve_config,
    save_config,
)


def test_every_preset_resolves_and_msrvtt_is_the_reference_recipe():
    assert {"msrvtt", "didemo", "activitynet", "lsmdc", "demo"} <= set(list_presets())
    for name in list_presets():
        resolve_config(name)
    c = resolve_config("msrvtt")
    reference = dict(
        dataset="msrvtt",
        frames=12,
        words=32,
        caption_words=32,
        batch_size=128,
        lr=6e-4,
        epochs=5,
        warmup_ratio=0.1,
        alpha=0.3,
        beta=1.0,
        h_v=4,
        h_l=2,
        lora_rank=8,
        weight_decay=0.2,
        adam_eps=1e-6,
        grad_clip=1.0,
        reference_world_size=4,
        backbone="ViT-B-32",
        randaugment="rand-m7-n4-mstd0.5-inc1",
        eval_every=150,
        precision="fp32",
    )
    assert {k: getattr(c, k) for k in reference} == reference


def test_overrides_are_typed_and_later_sources_win(tmp_path):
    c = resolve_config(
        "msrvtt",
        [
            "lr=3e-4",
            "batch_size=64",
            "captions=/data/caps",
            "use_ivfusion=false",
            "pretrained=null",
            "micro_batch_size=16",
        ],
        seed=7,
    )
    assert (c.lr, c.batch_size, c.captions, c.use_ivfusion, c.pretrained, c.micro_batch_size, c.seed) == (
        3e-4,
        64,
        "/data/caps",
        False,
        None,
        16,
        7,
    )
    assert (c.effective_h_v, c.effective_h_l) == (0, 0)
    assert isinstance(resolve_config("msrvtt", ["lr=1"]).lr, float)
    custom = tmp_path / "mine.yaml"
    custom.write_text("batch_size: 32\nepochs: 2\n")
    assert (resolve_config(custom).batch_size, resolve_config(custom, ["epochs=3"]).epochs) == (32, 3)
    assert parse_override("randaugment=") == ("randaugment", "")


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("lrr=1", "lrr"),
        ("batch_size=0", "batch_size=0"),
        ("batch_size=2.5", "batch_size=2.5"),
        ("lr=fast", "lr='fast'"),
        ("use_ivfusion=maybe", "use_ivfusion='maybe'"),
        ("precision=fp8", "precision"),
        ("warmup_ratio=1.5", "warmup_ratio=1.5"),
        ("frames=null", "frames"),
        ("randaugment=autoaug", "randaugment"),
        ("randaugment=rand-mX-n4", "rand-mX-n4"),
        ("on_decode_error=ignore", "on_decode_error"),
        ("nokey", "key=value"),
    ],
)
def test_bad_values_name_the_field_and_value(override, names):
    with pytest.raises(ConfigError, match=names.replace("[", r"\[").replace("(", r"\(")):
        resolve_config("msrvtt", [override])


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="msrvtt"):
        resolve_config("no-such-preset")


def test_saved_config_is_sorted_reloadable_and_has_provenance(tmp_path):
    cfg = resolve_config("didemo", ["lr=1e-4"])
    path = save_config(cfg, tmp_path / "run", world_size=2)
    text = path.read_text()
    keys = [line.split(":")[0] for line in text.splitlines()]
    assert keys == sorted(keys) and text == format_config(cfg)
    assert resolve_config(path) == cfg  # a run folder's config.yaml is a preset again
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert info["world_size"] == 2 and info["git"] and info["versions"]["torch"]
    assert yaml.safe_load(text)["lr"] == 1e-4


def test_cli_dry_run_prints_config_and_parameter_table(capsys):
    from training.model import DiscoVLAConfig, build_model

    rc = train_main(["--preset", "demo", "--dry-run", "--no-pretrained", "--set", "h_l=1"])
    out = capsys.readouterr().out
    assert rc == 0 and "resolved config:" in out and "h_l: 1" in out
    expected = build_model(
        DiscoVLAConfig(backbone="DiscoVLA-Tiny", pretrained=None, h_v=4, h_l=1)
    ).parameter_groups()
    for group, count in expected.items():
        assert f"{group}" in out and f"{count:,}" in out
    assert f"{sum(expected.values()):,}" in out.split("trainable total")[1].splitlines()[0]


def test_cli_reports_bad_fields_with_exit_status_2(capsys):
    assert train_main(["--preset", "demo", "--dry-run", "--set", "nope=1"]) == 2
    assert "nope" in capsys.readouterr().err


def test_ray_gpu_use_is_decided_by_the_cluster_not_the_driver(monkeypatch):
    import ray

    from training.launch import resolve_use_gpu, worker_runtime_env

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 64.0, "GPU": 8.0})  # a GPU cluster ...
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # ... driven from a CPU-only head node
    assert resolve_use_gpu("auto", 8) is True and resolve_use_gpu("no", 8) is False
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 64.0})
    assert (
        resolve_use_gpu("auto", 2) is False and resolve_use_gpu("yes", 2) is True
    )  # forced: Ray waits for GPUs
    with pytest.raises(ValueError, match="use_gpu='maybe'"):
        resolve_use_gpu("maybe", 2)
    monkeypatch.setenv("DISCOVLA_DATA", "relative/data")
    env = worker_runtime_env()["env_vars"]
    checkout = str(Path(__file__).resolve().parents[1])  # where the workers import training from
    assert (
        env["DISCOVLA_DATA"] == str(Path("relative/data").resolve())
        and env["PYTHONPATH"].split(":")[0] == checkout
    )
