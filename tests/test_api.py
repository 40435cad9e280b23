"""The public Python API (training.api) used the way its docstring shows, and nothing else of the library.

Test data (generated colour videos, a caption set, a tiny CLIP checkpoint file) comes from test helpers;
every library call goes through ``training.api``.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers import colour_captions, colour_videos, save_tiny_checkpoint
from training import api

pytestmark = pytest.mark.slow

TINY = "DiscoVLA-Tiny"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny DiscoVLA trained through api.train on 8 colour videos (folder dataset, train = test)."""
    root = tmp_path_factory.mktemp("api")
    items = colour_videos(root / "videos")
    annotations = root / "annotations"
    annotations.mkdir()
    rows = "".join(json.dumps({"video_id": i.video_id, "text": i.text}) + "\n" for i in items)
    for split in ("train", "test"):
        (annotations / f"{split}.jsonl").write_text(rows)
    captions = colour_captions(root / "captions", items, frames=4)
    checkpoint = save_tiny_checkpoint(root)
    run = api.train(
        "demo",
        dataset="folder",
        annotations=str(annotations),
        video_root=str(root / "videos"),
        captions=str(captions),
        backbone=TINY,
        pretrained=checkpoint,
        frames=4,
        words=16,
        caption_words=16,
        batch_size=8,
        epochs=3,
        lr=3e-3,
        warmup_ratio=0.0,
        seed=0,
        output_dir=str(root / "run"),
    )
    split = {"annotations": annotations, "video_root": root / "videos", "words": 16, "progress": False}
    return {"run": run, "items": items, "split": split, "captions": captions, "checkpoint": checkpoint}


def test_loaded_adapters_reproduce_the_runs_final_evaluation(trained_run):
    run = trained_run["run"]
    recorded = json.loads((run / "adapters" / "last.json").read_text())["metrics"]
    model = api.load_model(run / "adapters" / "last")
    assert isinstance(model, api.DiscoVLA) and not model.training
    assert model.cfg.num_frames == 4 and model.cfg.pretrained == trained_run["checkpoint"]
    metrics = api.evaluate(model, "folder", "test", **trained_run["split"])
    assert (metrics["num_texts"], metrics["num_videos"]) == (8, 8)
    for direction in ("t2v", "v2t"):
        for key in ("R1", "R5", "MnR"):
            assert metrics[direction][key] == pytest.approx(recorded[direction][key]), (direction, key)


def test_encoders_agree_with_the_evaluator(trained_run):
    model = api.load_model(trained_run["run"] / "adapters" / "best")
    items = trained_run["items"]
    texts = api.encode_texts(model, [i.text for i in items])
    videos = api.encode_videos(model, [i.path for i in items], progress=False)
    assert texts.shape == videos.shape == (8, model.embed_dim) and texts.dtype == torch.float32
    torch.testing.assert_close(videos.norm(dim=-1), torch.ones(8))
    sim = texts @ videos.T
    ranks = (sim > sim.diagonal().unsqueeze(1)).sum(1)  # 0-based rank of each text's own video
    metrics = api.evaluate(model, "folder", "test", **trained_run["split"])
    assert metrics["t2v"]["R1"] == pytest.approx(100 * (ranks == 0).float().mean().item())
    assert metrics["t2v"]["MnR"] == pytest.approx(ranks.float().mean().item() + 1)
    # one string, and a repeated path, give the same rows
    torch.testing.assert_close(api.encode_texts(model, items[2].text), texts[2:3])
    again = api.encode_videos(model, [items[1].path, items[0].path, items[1].path], progress=False)
    torch.testing.assert_close(again, videos[[1, 0, 1]])


def test_merged_model_gives_the_same_features(trained_run):
    adapters = trained_run["run"] / "adapters" / "last"
    model, merged = api.load_model(adapters), api.load_model(adapters, merge=True)
    assert merged.parameter_groups()["vision_lora"] == 0 < model.parameter_groups()["vision_lora"]
    paths = [i.path for i in trained_run["items"][:3]]
    torch.testing.assert_close(
        api.encode_videos(merged, paths, progress=False),
        api.encode_videos(model, paths, progress=False),
        atol=1e-5,
        rtol=1e-4,
    )
    torch.testing.assert_close(
        api.encode_texts(merged, ["a red video"]),
        api.encode_texts(model, ["a red video"]),
        atol=1e-5,
        rtol=1e-4,
    )
    with pytest.raises(ValueError, match="merge"):
        api.save_adapters(merged, trained_run["run"] / "merged")


def test_zero_shot_model_and_saved_adapters(trained_run, tmp_path):
    zero = api.load_model(None, backbone=TINY, pretrained=trained_run["checkpoint"], frames=4)
    assert zero.parameter_groups()["vision_adapters"] == zero.parameter_groups()["text_adapters"] == 0
    assert zero.cfg.num_frames == 4
    trained = api.load_model(trained_run["run"] / "adapters" / "last")
    folder = api.save_adapters(trained, tmp_path / "copy")
    copy = api.load_model(folder)
    paths = [i.path for i in trained_run["items"][:2]]
    torch.testing.assert_close(
        api.encode_videos(copy, paths, progress=False),
        api.encode_videos(trained, paths, progress=False),
        atol=0,
        rtol=0,
    )


def test_caption_set_reads_back(trained_run):
    captions = api.read_captions(trained_run["captions"])
    names = sorted(i.video_id for i in trained_run["items"])
    assert captions.num_frames == 4 and sorted(captions.captions) == names
    assert all(len(c) == 4 for c in captions.captions.values()) and not captions.failed
    with pytest.raises(api.DiscoVLAError, match="4"):
        api.read_captions(trained_run["captions"], num_frames=6)


def test_expected_failures_name_the_file(trained_run, tmp_path):
    with pytest.raises(api.AdapterLoadError, match="adapter_config.json") as err:
        api.load_model(tmp_path / "nowhere")
    assert isinstance(err.value, api.DiscoVLAError)
    model = api.load_model(trained_run["run"] / "adapters" / "last")
    with pytest.raises(api.DiscoVLAError, match="missing.mp4"):
        api.encode_videos(model, [trained_run["items"][0].path, tmp_path / "missing.mp4"], progress=False)
    with pytest.raises(TypeError, match="list of strings"):
        api.encode_texts(model, [])
