"""The tiny LLaVA-NeXT, the transformers engine loading it by path, prompts, model resolution, backend choice."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors import safe_open

from captioning.config import EngineSpec, SamplingConfig
from captioning.engines import choose_backend, make_engine
from captioning.models import ModelNotFoundError, local_fingerprint, resolve_model
from captioning.prompts import PRESETS, chat_template_sha256, resolve_prompt
from captioning.tiny_model import save_tiny_llava_next

QUESTION = PRESETS["frame-caption-v1"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_llava_next(tmp_path_factory.mktemp("tiny") / "llava", seed=0)


@pytest.fixture(scope="module")
def engine(tiny_dir):
    spec = EngineSpec(
        backend="transformers",
        model=str(tiny_dir),
        prompt_text=QUESTION,
        sampling=SamplingConfig(max_tokens=8),
        batch_size=3,
    )
    return make_engine(spec)


def _frames(n: int, size=(48, 64)) -> list[np.ndarray]:
    return [np.random.default_rng(i).integers(0, 256, (*size, 3), dtype=np.uint8) for i in range(n)]


def test_tiny_model_is_saved_in_the_llava_hf_layout(tiny_dir):
    with safe_open(tiny_dir / "model.safetensors", "pt") as fh:
        names = list(fh.keys())
    prefixes = {n.split(".")[0] for n in names}
    assert prefixes == {"vision_tower", "language_model", "multi_modal_projector", "image_newline"}
    assert all(n.startswith("vision_tower.vision_model.") for n in names if n.startswith("vision_tower"))
    assert any(n.startswith("language_model.lm_head.") for n in names)
    config = (tiny_dir / "config.json").read_text()
    assert '"head_dim": 64' in config  # what vLLM's CPU attention accepts


def test_transformers_engine_loads_by_path_and_captions(engine, tiny_dir):
    import torch
    from transformers import LlavaNextForConditionalGeneration

    from captioning.tiny_model import build_tiny_llava_next

    reference, _ = build_tiny_llava_next(seed=0)  # the weights save_tiny_llava_next wrote
    loaded = engine.model.state_dict()
    assert set(loaded) == set(reference.state_dict())
    assert all(torch.equal(loaded[k], v) for k, v in reference.state_dict().items())
    assert isinstance(engine.model, LlavaNextForConditionalGeneration)
    assert engine.prompt == f"[INST] <image>\n{QUESTION} [/INST]"

    results = engine.caption(_frames(4))
    assert len(results) == 4
    for r in results:
        assert r.finish_reason in ("stop", "length")
        assert 1 <= r.n_tokens <= 8 and len(r.token_ids) == r.n_tokens
        assert r.finish_reason == "stop" or r.n_tokens == 8
        assert r.text == r.text.strip()
    assert len({r.token_ids for r in results}) > 1  # different images, different captions


def test_batched_and_single_calls_agree_and_are_deterministic(engine):
    frames = _frames(5)  # batch_size 3: a batch of 3 then one of 2
    batched = engine.caption(frames)
    single = [engine.caption([f])[0] for f in frames]
    assert [r.token_ids for r in batched] == [r.token_ids for r in single]
    assert engine.caption(frames[:2]) == batched[:2]


def test_engine_accepts_pil_and_rejects_wrong_arrays(engine):
    from PIL import Image

    frame = _frames(1)[0]
    assert engine.caption([Image.fromarray(frame)]) == engine.caption([frame])
    with pytest.raises(ValueError, match="uint8"):
        engine.caption([frame.astype(np.float32)])


def test_engine_provenance(engine, tiny_dir):
    prov = engine.provenance()
    assert prov["engine"] == "transformers" and prov["dtype"] == "float32"
    assert prov["model"] == str(tiny_dir)
    assert prov["sampling"] == {"temperature": 0.0, "top_p": 1.0, "max_tokens": 8, "seed": 0}
    assert prov["chat_template_sha256"] == chat_template_sha256(engine.processor)
    assert len(prov["chat_template_sha256"]) == 64 and "transformers" in prov["library_versions"]


def test_prompts_presets_custom_and_typos():
    preset = resolve_prompt("frame-caption-v1")
    assert (preset.name, preset.text) == ("frame-caption-v1", QUESTION)
    custom = resolve_prompt("  What is happening here?  ")
    assert (custom.name, custom.text) == ("custom", "What is happening here?")
    assert custom.sha256 != preset.sha256
    with pytest.raises(ValueError, match="unknown prompt preset 'frame-caption-v9'"):
        resolve_prompt("frame-caption-v9")
    with pytest.raises(ValueError, match="empty prompt"):
        resolve_prompt("   ")


def test_resolve_model_local_dir_and_fingerprint(tiny_dir, tmp_path):
    resolved = resolve_model(str(tiny_dir))
    assert resolved.model == resolved.local_dir == str(tiny_dir.resolve())
    assert resolved.revision == local_fingerprint(tiny_dir)
    other = save_tiny_llava_next(tmp_path / "other", seed=1)  # same sizes, other weights
    assert local_fingerprint(other) != resolved.revision


def test_missing_model_errors_say_how_to_provide_it(tmp_path, monkeypatch):
    with pytest.raises(ModelNotFoundError, match="does not exist.*--model DIR"):
        resolve_model(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model(str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelNotFoundError, match="not in the Hugging Face cache.*HF_HUB_OFFLINE=1"):
        resolve_model("llava-hf/llava-v1.6-mistral-7b-hf")


def test_backend_choice(monkeypatch):
    import captioning.engines as engines

    assert choose_backend("transformers", 4)[0] == "transformers"
    assert choose_backend("auto", 0)[0] == "transformers"
    monkeypatch.setattr(engines, "vllm_available", lambda: False)
    backend, reason = choose_backend("auto", 2)
    assert backend == "transformers" and "not importable" in reason
    monkeypatch.setattr(engines, "vllm_available", lambda: True)
    assert choose_backend("auto", 2) == ("vllm", "2 GPU(s) and vllm importable")


def test_max_model_len_follows_the_model_config_capped_at_one_frame(tiny_dir, tmp_path):
    import json
    import shutil

    from captioning.config import CaptionConfig
    from captioning.models import image_tokens_bound, model_context_length
    from captioning.pipeline import engine_spec
    from captioning.tiny_model import tiny_llava_next_config

    # tiny model: 56-px tiles of 4x4 patches, anyres up to 2x2 tiles: (4 + 1) x 16 + 2 x 4 row newlines
    assert image_tokens_bound(tiny_llava_next_config()) == 88
    resolved = resolve_model(str(tiny_dir))
    # 88 + 64 + len(question) + 60, rounded up to 256
    assert model_context_length(resolved, max_tokens=60, prompt_text=QUESTION) == 256
    assert model_context_length(resolved, max_tokens=400, prompt_text=QUESTION) == 768

    short = tmp_path / "short-context"
    shutil.copytree(tiny_dir, short)
    config = json.loads((short / "config.json").read_text())
    config["text_config"]["max_position_embeddings"] = 200  # shorter than one frame needs
    (short / "config.json").write_text(json.dumps(config))
    short_resolved = resolve_model(str(short))
    assert model_context_length(short_resolved, max_tokens=60, prompt_text=QUESTION) == 200

    cfg = CaptionConfig(out=str(tmp_path / "out"), model=str(tiny_dir))
    assert engine_spec(cfg, "vllm", resolved, QUESTION, 1.0).max_model_len == 256
    overridden = CaptionConfig(out=str(tmp_path / "out"), model=str(tiny_dir), max_model_len=1024)
    assert engine_spec(overridden, "vllm", resolved, QUESTION, 1.0).max_model_len == 1024


def test_gpus_per_engine_become_vllm_tensor_parallelism(tiny_dir, tmp_path):
    from captioning.config import CaptionConfig
    from captioning.pipeline import engine_spec

    resolved = resolve_model(str(tiny_dir))
    cfg = CaptionConfig(out=str(tmp_path / "out"), model=str(tiny_dir), max_model_len=512)
    assert engine_spec(cfg, "vllm", resolved, QUESTION, 2.0).engine_kwargs == {"tensor_parallel_size": 2}
    assert engine_spec(cfg, "vllm", resolved, QUESTION, 1.0).engine_kwargs == {}
    assert engine_spec(cfg, "transformers", resolved, QUESTION, 2.0).engine_kwargs == {}
    assert engine_spec(cfg, "vllm", resolved, QUESTION, 2.0).dtype == "bfloat16"


def test_a_local_git_checkout_is_recorded_by_its_commit(tiny_dir, tmp_path):
    import shutil

    checkout = tmp_path / "llava-checkout"
    shutil.copytree(tiny_dir, checkout)
    commit = "0123456789abcdef0123456789abcdef01234567"
    (checkout / ".git" / "refs" / "heads").mkdir(parents=True)
    (checkout / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (checkout / ".git" / "refs" / "heads" / "main").write_text(commit + "\n")
    resolved = resolve_model(str(checkout))
    assert resolved.revision == f"git:{commit}" and resolved.load_revision is None
    (checkout / ".git" / "refs" / "heads" / "main").unlink()
    (checkout / ".git" / "packed-refs").write_text(f"# pack-refs\n{commit} refs/heads/main\n")
    assert resolve_model(str(checkout)).revision == f"git:{commit}"


def test_a_hub_id_resolves_to_a_cached_commit_offline_without_downloading(tmp_path, monkeypatch):
    """A Hugging Face cache laid out as the Hub writes it (refs/main -> snapshots/<commit>)."""
    commit = "a" * 40
    repo = tmp_path / "hf" / "hub" / "models--someone--tiny-llava"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    resolved = resolve_model("someone/tiny-llava")
    assert resolved.revision == commit and resolved.load_revision == commit  # engines load this commit
    assert resolved.local_dir == str(repo / "snapshots" / commit)
