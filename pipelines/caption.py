"""Caption every sampled frame of a dataset's videos with LLaVA-NeXT, into resumable caption shards.

    python -m pipelines.caption --dataset didemo --split test --video-root VIDEOS --out OUT
        [--backend auto|vllm|transformers] [--model ID_OR_DIR] [--prompt PRESET_OR_TEXT] [--frames F]
        [--max-tokens 60] [--image-size 336] [--shard-size 256] [--gpus N | --engines N]
        [--ray-address ADDR] [--retry-failed]

Re-running the same command skips finished shards; ``--retry-failed`` re-captions only the failed videos
that now have a file. One run writes an ``--out`` at a time: a second run on the same ``--out`` (local or
``s3://``) is refused at once, naming the run that holds it (``shared.lease``). ``--video-root`` may be
an object-store URI (``s3://bucket/videos?endpoint_override=host:port&scheme=http``; credentials from the
usual ``AWS_*`` variables or files): each decode task copies its video from there. Before Ray starts or
a model loads (about a second), the run is checked against the output directory: other settings (model,
prompt, frames, resolution, sampler, sampling) are refused, a finished run reports "nothing to do" and exits, and the videos missing from the video root
are counted with examples. The backend defaults to vLLM when the Ray cluster has a GPU and vLLM is
importable, else transformers. Without ``--ray-address`` a local Ray instance is started, sized for this
machine. Prompt presets: ``captioning.prompts.PRESETS``. Exit status: 0 done or nothing to do (failed
videos are reported, not fatal), 1 error, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from captioning.config import BACKENDS, DEFAULT_MODEL, DTYPES, CaptionConfig, SamplingConfig
from captioning.prompts import PRESETS
from pipelines import cli
from shared.errors import DiscoVLAError, UsageError
from shared.frame_codecs import CODECS, DEFAULT_CODEC
from shared.uris import join_uri

logger = logging.getLogger("pipelines.caption")


class SettingsError(UsageError):
    """A setting or dataset argument that cannot work (reported as ``error: ...``, exit 2: a usage error)."""


def _engine_arg(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (VALUE as JSON), got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser("caption", __doc__)
    data = p.add_argument_group("data")
    cli.add_dataset_arg(data)
    data.add_argument("--split", default="test", help="the dataset's split (default: test)")
    data.add_argument(
        "--annotations", help="annotation file or folder, or its URI (default: <data>/<dataset>/annotations)"
    )
    data.add_argument(
        "--video-root",
        help="folder or URI (s3://, gs://, any pyarrow filesystem) of the videos "
        "(default: <data>/<dataset>/videos)",
    )
    data.add_argument("--out", required=True, help="caption-set directory (created; re-use it to resume)")
    data.add_argument(
        "--save-frames",
        nargs="?",
        const="",
        default=None,
        metavar="STORE",
        help="also write the sampled frames into a frame store for training (default STORE: "
        "OUT/frames); existing caption sets: python -m pipelines.framestore build --captions OUT",
    )
    data.add_argument(
        "--save-frames-size",
        type=int,
        default=224,
        help="short side of the saved frames in pixels: the trainer's (default: 224, ViT-B)",
    )
    data.add_argument(
        "--save-frames-codec",
        default=DEFAULT_CODEC,
        choices=CODECS,
        help="encoding of the saved frames (default: jpeg q95; the others are lossless, 3-7x larger)",
    )
    model = p.add_argument_group("model and prompt (recorded; changing them in an existing --out is refused)")
    model.add_argument("--backend", choices=BACKENDS, default="auto", help="caption engine (default: auto)")
    model.add_argument("--model", default=DEFAULT_MODEL, help="Hugging Face id or local directory")
    model.add_argument("--revision", help="Hub revision (branch, tag or commit)")
    model.add_argument("--prompt", default="frame-caption-v1", help=f"preset {sorted(PRESETS)} or a question")
    model.add_argument("--frames", type=int, help="frames per video F (default: the dataset preset, 12)")
    model.add_argument("--max-tokens", type=int, default=60, help="longest caption in tokens (default: 60)")
    model.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    model.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default: 1.0)")
    model.add_argument("--seed", type=int, default=0, help="sampling seed when --temperature > 0")
    model.add_argument(
        "--image-size",
        type=int,
        default=336,
        help="resize frames so the short side has this many pixels; 0 = as decoded",
    )
    model.add_argument(
        "--dtype", choices=DTYPES, default="auto", help="model dtype (auto: bf16 on GPU, fp32 on CPU)"
    )
    run = p.add_argument_group("execution (free to change between runs)")
    run.add_argument(
        "--shard-size", type=int, default=256, help="videos per shard (fixed once a split started)"
    )
    run.add_argument("--gpus", type=int, help="use N GPUs, one engine each (0: CPU engines)")
    run.add_argument(
        "--engines",
        "--workers",
        dest="engines",
        type=int,
        help="caption engine actors (default: one per GPU, else 1; --workers is the old name)",
    )
    run.add_argument(
        "--cpus-per-engine",
        "--cpus-per-worker",
        dest="cpus_per_engine",
        type=int,
        default=1,
        help="CPU threads per CPU engine (--cpus-per-worker is the old name)",
    )
    run.add_argument(
        "--gpus-per-engine",
        "--gpus-per-worker",
        dest="gpus_per_engine",
        type=float,
        help="GPUs per engine actor (default: 1 with GPUs, else 0; --gpus-per-worker is the old name)",
    )
    run.add_argument(
        "--videos-per-call", type=int, help="videos batched per engine call (default: 8 vllm, 1 else)"
    )
    run.add_argument(
        "--frames-per-call",
        "--batch-size",
        dest="frames_per_call",
        type=int,
        default=16,
        help="transformers: frames per generate() call (--batch-size is the old name)",
    )
    run.add_argument(
        "--max-model-len",
        type=int,
        help="vllm: context length (default: the model's own, capped at what one frame needs)",
    )
    run.add_argument(
        "--engine-arg",
        type=_engine_arg,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra vllm.LLM keyword argument (VALUE as JSON), repeatable",
    )
    run.add_argument("--decode-timeout", type=float, default=60.0, help="seconds per video before it fails")
    run.add_argument(
        "--retry-failed", action="store_true", help="re-caption only the failed videos that now have a file"
    )
    run.add_argument("--ray-address", help="join this Ray cluster (e.g. auto or ray://host:10001)")
    run.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: this machine's)")
    return p


def _config(args, frames: int) -> CaptionConfig:
    workers = args.engines if args.engines is not None else (args.gpus or None)
    gpus_per_worker = (
        args.gpus_per_engine if args.gpus_per_engine is not None else (0.0 if args.gpus == 0 else None)
    )
    return CaptionConfig(
        out=args.out,
        model=args.model,
        revision=args.revision,
        backend=args.backend,
        prompt=args.prompt,
        frames=frames,
        image_size=args.image_size or None,
        sampling=SamplingConfig(
            temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens, seed=args.seed
        ),
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        batch_size=args.frames_per_call,
        shard_size=args.shard_size,
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        cpus_per_worker=args.cpus_per_engine,
        videos_per_call=args.videos_per_call,
        decode_timeout_s=args.decode_timeout,
        retry_failed=args.retry_failed,
        engine_kwargs=dict(args.engine_arg),
        save_frames=None if args.save_frames is None else (args.save_frames or join_uri(args.out, "frames")),
        save_frames_size=args.save_frames_size,
        save_frames_codec=args.save_frames_codec,
    )


def _init_ray(args, cfg: CaptionConfig) -> None:
    import ray

    if args.ray_address:
        from shared.errors import connect_ray

        connect_ray(args.ray_address, logging_level=logging.WARNING)
        return
    engine_cpus = (cfg.workers or 1) * cfg.cpus_per_worker
    num_cpus = args.num_cpus or max(os.cpu_count() or 1, engine_cpus + 1)
    num_gpus = 0 if args.gpus == 0 else None  # None: Ray detects the GPUs
    ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, logging_level=logging.WARNING)


def prepare(args):
    """(items, config, video source, RunPlan): everything decided before Ray starts or a model loads."""
    from captioning.plan import prepare_run
    from shared.datasets import get_dataset

    try:
        adapter = get_dataset(
            args.dataset, args.split, annotations=args.annotations, video_root=args.video_root
        )
        cfg = _config(args, args.frames or adapter.frames)
    except ValueError as err:
        if isinstance(err, DiscoVLAError):
            raise
        raise SettingsError(str(err)) from err
    items = adapter.items()
    video_source = adapter.video_source()
    plan = prepare_run(items, cfg, dataset=args.dataset, split=args.split, video_source=video_source)
    return items, cfg, video_source, plan


def run(args) -> int:
    """Take ``--out``'s lease (refused while another run writes there, ``shared.lease``), then caption;
    the lease is released however the run ends (done, error, KeyboardInterrupt)."""
    from shared.lease import OutputLease

    with OutputLease(args.out, what="caption"):
        return _caption(args)


def _caption(args) -> int:
    """Check and plan without Ray (refuse, or "nothing to do"), then start Ray and caption."""
    items, cfg, video_source, plan = prepare(args)
    print(plan.format(), flush=True)
    if plan.nothing_to_do:
        return 0
    from captioning.pipeline import run_captioning  # imports Ray: only now that there is work
    from shared.storage_check import StorageCheck, first_readable

    outputs = [cfg.out] + ([cfg.save_frames] if cfg.save_frames else [])
    pending = (video.path for shard in plan.work for video in shard.todo)
    check = StorageCheck(outputs=outputs, inputs=first_readable(pending)).on_driver()
    _init_ray(args, cfg)
    check.on_cluster()  # every node sees the outputs and reads a video, before any model loads
    summary = run_captioning(
        items,
        cfg,
        dataset=args.dataset,
        split=args.split,
        plan=plan,
        progress=cli.progress_enabled(args),
        video_source=video_source,
    )
    print(summary.format())
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
