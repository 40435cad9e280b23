"""training.evaluate and ``python -m pipelines.evaluate`` on generated videos with the tiny CLIP (random weights)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import training.evaluate as ev
from pipelines.evaluate import main as evaluate_cli
from shared.synthetic import make_broken_video
from tests.helpers import colour_videos
from training.adapters import save_adapters
from training.augment import VideoTransform
from training.data import RetrievalDataset, clip_tokenizer
from training.metrics import ranks, text_video_metrics
from training.model import DiscoVLAConfig, build_model

FRAMES, WORDS = 4, 16


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    return colour_videos(tmp_path_factory.mktemp("colours") / "videos")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_model(
        DiscoVLAConfig(backbone="DiscoVLA-Tiny", pretrained=None, num_frames=FRAMES, max_words=WORDS)
    )
    with torch.no_grad():  # non-zero adapters, so that they matter
        for p in m.parameters():
            if p.requires_grad:
                p.normal_(0, 0.05)
    return m


def _dataset(model, items, policy: str = "blank") -> RetrievalDataset:
    return RetrievalDataset(
        items,
        num_frames=FRAMES,
        transform=VideoTransform.from_model(model.preprocess_cfg),
        tokenizer=clip_tokenizer("DiscoVLA-Tiny", WORDS),
        on_decode_error=policy,
        normalize=False,
    )


def _direct_features(model, data) -> tuple[torch.Tensor, torch.Tensor]:
    """One text and one video at a time, straight through the model's encoders."""
    texts, videos = [], []
    with torch.no_grad():
        for i in range(len(data)):
            sample = data[i]
            texts.append(model.encode_text(sample["text_tokens"][None]))
            frames = data.transform.normalize(sample["frames"][None])
            videos.append(model.encode_video(frames, sample["frame_mask"][None])[1])
    return torch.cat(texts), torch.cat(videos)


def test_metrics_match_a_direct_computation(model, items):
    data = _dataset(model, items)
    result = ev.evaluate(model, data, batch_size=3, progress=False)  # batches of 3 over 8 items
    text, video = _direct_features(model, data)
    expected = text_video_metrics(model.logit_scale_value * text @ video.t())
    assert result["t2v"] == pytest.approx(expected["t2v"]) and result["v2t"] == pytest.approx(expected["v2t"])
    assert result["num_texts"] == result["num_videos"] == 8 and result["decode_failed"] == []
    assert "t2v_dsl" not in result and model.training  # evaluation leaves the model's mode as it was


def test_cached_equals_uncached_and_second_run_reads_the_cache(model, items, tmp_path, monkeypatch):
    data = _dataset(model, items)
    uncached = ev.evaluate(model, data, batch_size=4, dsl=True, progress=False)
    first = ev.evaluate(model, data, batch_size=4, cache_dir=tmp_path, dsl=True, progress=False)
    assert len(list(tmp_path.glob("features-*.safetensors"))) == 1

    def no_extraction(*args, **kwargs):
        raise AssertionError("features should come from the cache")

    monkeypatch.setattr(ev, "extract_features", no_extraction)
    second = ev.evaluate(model, data, batch_size=4, cache_dir=tmp_path, dsl=True, progress=False)
    assert first == uncached and second == uncached
    assert {"t2v_dsl", "v2t_dsl"} <= second.keys()
    monkeypatch.undo()
    cache_file = next(tmp_path.glob("features-*.safetensors"))
    cache_file.write_bytes(b"not safetensors")  # a damaged cache is re-extracted and rewritten
    assert ev.evaluate(model, data, batch_size=4, cache_dir=tmp_path, dsl=True, progress=False) == uncached
    assert cache_file.stat().st_size > 100


def test_cache_key_follows_adapters_items_and_frames(model, items):
    data = _dataset(model, items)
    cpu = torch.device("cpu")
    key = ev.feature_cache_key(model, data, device=cpu)
    assert ev.feature_cache_key(model, data, device=cpu) == key
    name, param = next((n, p) for n, p in model.named_parameters() if p.requires_grad)
    with torch.no_grad():
        param.add_(1e-3)
    try:
        assert ev.feature_cache_key(model, data, device=cpu) != key, f"changing {name} must change the key"
    finally:
        with torch.no_grad():
            param.sub_(1e-3)
    assert ev.feature_cache_key(model, _dataset(model, items[:-1]), device=cpu) != key
    edited = [dataclasses.replace(items[0], text="another text")] + items[1:]
    assert ev.feature_cache_key(model, _dataset(model, edited), device=cpu) != key
    fewer_frames = RetrievalDataset(
        items,
        num_frames=FRAMES - 1,
        transform=data.transform,
        tokenizer=data.tokenizer,
        on_decode_error="blank",
        normalize=False,
    )
    assert ev.feature_cache_key(model, fewer_frames, device=cpu) != key


def test_several_texts_per_video_decode_each_video_once(model, items, monkeypatch):
    many = [
        dataclasses.replace(it, text=f"{it.text} {k}", item_id=f"{it.video_id}_{k}")
        for k in range(3)
        for it in items
    ]  # 24 texts, 8 videos, interleaved
    data = _dataset(model, many)
    decoded = []
    original = RetrievalDataset._frames
    monkeypatch.setattr(
        RetrievalDataset,
        "_frames",
        lambda self, item, seed: decoded.append(item.video_id) or original(self, item, seed),
    )
    result = ev.evaluate(model, data, batch_size=5, progress=False)
    assert result["num_texts"] == 24 and result["num_videos"] == 8
    assert sorted(decoded) == sorted(it.video_id for it in items)
    text, video = _direct_features(model, _dataset(model, items))
    texts = torch.cat([model.encode_text(data.tokenizer([it.text for it in many]))]).detach()
    owner = [k % 8 for k in range(24)]
    expected = text_video_metrics(model.logit_scale_value * texts @ video.t(), owner)
    assert result["t2v"] == pytest.approx(expected["t2v"]) and result["v2t"] == pytest.approx(expected["v2t"])


def test_undecodable_video_is_a_miss_and_substitution_is_refused(model, items, tmp_path):
    broken = dataclasses.replace(
        items[0],
        video_id="broken",
        path=make_broken_video(tmp_path / "b.mp4", "truncated"),
        text="a broken video",
    )
    data = _dataset(model, [broken] + items[1:])
    blank = ev.evaluate(model, data, batch_size=4, progress=False)
    assert blank["decode_failed"] == ["broken"]
    text, video = _direct_features(model, data)
    sim = model.logit_scale_value * text @ video.t()
    sim[:, 0] = sim.min() - 1  # its column below everything: its text misses, its v2t row ties (last)
    expected = text_video_metrics(sim)
    assert blank["t2v"] == pytest.approx(expected["t2v"]) and blank["v2t"] == pytest.approx(expected["v2t"])
    assert ranks(sim)[0] == 7 and ranks(sim.t())[0] == 7  # last in both directions
    with pytest.raises(RuntimeError, match="on_decode_error='blank'"):
        ev.evaluate(
            model, _dataset(model, [broken] + items[1:], policy="substitute"), batch_size=4, progress=False
        )


@pytest.mark.slow
def test_cli_adapters_and_zero_shot(model, items, tmp_path, capsys):
    annotations = tmp_path / "test.jsonl"
    annotations.write_text(
        "".join(json.dumps({"video_id": Path(it.path).name, "text": it.text}) + "\n" for it in items)
    )
    root = Path(items[0].path).parent
    adapters = save_adapters(model, tmp_path / "adapters")
    common = [
        "--dataset",
        "folder",
        "--annotations",
        str(annotations),
        "--video-root",
        str(root),
        "--pretrained",
        "none",
        "--words",
        str(WORDS),
        "--num-workers",
        "0",
        "--batch-size",
        "4",
    ]
    out = tmp_path / "out"
    assert evaluate_cli(common + ["--adapters", str(adapters), "--out", str(out), "--dsl"]) == 0
    printed = capsys.readouterr().out
    assert "text-to-video" in printed and "DSL re-scored" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert (
        metrics["num_texts"] == 8 and metrics["setup"]["frames"] == FRAMES
    )  # frames from the adapter config
    assert (out / "recall_table.html").is_file() and (out / "recall_table.png").stat().st_size > 1000
    assert len(list((out / "feature_cache").glob("*.safetensors"))) == 1
    assert evaluate_cli(common + ["--adapters", str(adapters), "--out", str(out), "--dsl"]) == 0
    assert len(list((out / "feature_cache").glob("*.safetensors"))) == 1  # same adapters: the cache was hit
    assert json.loads((out / "metrics.json").read_text())["t2v"] == metrics["t2v"]

    zero = tmp_path / "zero"
    assert (
        evaluate_cli(
            common
            + [
                "--adapters",
                "none",
                "--backbone",
                "DiscoVLA-Tiny",
                "--frames",
                str(FRAMES),
                "--out",
                str(zero),
            ]
        )
        == 0
    )
    zs = json.loads((zero / "metrics.json").read_text())
    assert zs["setup"]["adapters"].startswith("none") and "t2v_dsl" not in zs
    capsys.readouterr()
    assert evaluate_cli(common + ["--adapters", str(tmp_path / "missing"), "--out", str(zero)]) == 1
    err = capsys.readouterr().err  # an expected failure: one line naming the file, no traceback
    assert err.strip().splitlines()[-1].startswith("error: ") and "adapter_config.json" in err
    assert "Traceback" not in err


def test_zero_shot_model_is_plain_clip(items, tmp_path):
    annotations = tmp_path / "test.jsonl"
    annotations.write_text(json.dumps({"video_id": Path(items[0].path).name, "text": items[0].text}) + "\n")
    model, data, setup = ev.build_evaluation(
        "folder",
        "test",
        adapters=None,
        annotations=annotations,
        video_root=Path(items[0].path).parent,
        backbone="DiscoVLA-Tiny",
        pretrained=None,
        frames=FRAMES,
        words=WORDS,
    )
    assert model.cfg.h_v == model.cfg.h_l == 0 and len(data) == 1 and setup["words"] == WORDS
    lora_b = [p.detach() for n, p in model.named_parameters() if n.endswith("lora_B")]
    assert lora_b and all(float(p.abs().sum()) == 0 for p in lora_b)  # LoRA starts as a no-op
    assert not any(".adapter." in n for n, _ in model.named_parameters())  # no IVFusion adapters
