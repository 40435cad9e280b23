"""Train DiscoVLA adapters on a frozen CLIP.

    python -m pipelines.train --preset msrvtt --set captions=CAPTIONS [--set key=value ...]
                              [--dry-run] [--pretrained TAG|PATH|none] [--resume] [--launcher local|ray]

Presets live in training/presets/*.yaml (msrvtt = the reference recipe; didemo, activitynet, lsmdc, demo)
or pass a YAML path. Any config field is overridden with ``--set key=value`` (repeatable; YAML values:
``--set lr=3e-4 --set use_ivfusion=false``); ``--list-fields`` shows them all. The run prints the fields
that differ from the defaults once; the full resolved config goes to <output_dir>/config.yaml.

The run folder may be on object storage (any pyarrow filesystem URI; credentials from the standard
``AWS_*`` variables or config files): ``--out "s3://bucket/runs/x?endpoint_override=HOST:PORT&scheme=http"``.
Checkpoints, adapters, metrics, curves, TensorBoard events and config land there (written locally, each
file uploaded whole), ``--resume`` downloads the checkpoint from there, and with ``--launcher ray`` Ray
Train keeps its storage under ``<output_dir>/ray`` on the same store: the nodes share no disk.

Many GPUs: ``torchrun --nproc-per-node 4 -m pipelines.train --preset msrvtt ...`` (DDP; one node or
several with torchrun's rendezvous options), or ``--launcher ray --ray-workers 4 [--ray-address HOST:PORT]``
on a Ray cluster (GPUs decided from the cluster's resources, ``--use-gpu`` to force; a lost worker or
node is replaced and training resumes from the last checkpoint, up to ``--max-failures`` times).
The global batch stays ``batch_size`` whatever the number of processes; evaluation is shared by them.
``--dry-run`` prints the resolved config and the trainable parameters per group, then exits
(``--pretrained none`` builds random weights, offline).
Exit status 2 with the cause on standard error for a bad preset, field or value; 1 for other expected
failures (missing weights or captions, a caption set made with another sampler, an unreachable cluster).
"""

from __future__ import annotations

import argparse
import logging
import sys

from pipelines import cli
from training.config import ConfigError, field_types, list_presets, resolve_config

logger = logging.getLogger("pipelines.train")


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser("train", __doc__)
    p.add_argument(
        "--preset", default="msrvtt", help=f"one of {list_presets()} or a .yaml path (default: msrvtt)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config field (repeatable)",
    )
    p.add_argument(
        "--pretrained",
        default=None,
        metavar="TAG|PATH|none",
        help="CLIP weights: an open_clip tag, a checkpoint file, or none for random weights "
        "(default: the preset's)",
    )
    p.add_argument("--no-pretrained", action="store_true", help="deprecated alias of --pretrained none")
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="run folder (the same as --set output_dir=DIR; default: the preset's)",
    )
    p.add_argument(
        "--num-workers",
        type=int,
        default=None,
        metavar="N",
        help="DataLoader worker processes per training process, for training and evaluation "
        "(default: the preset's num_workers)",
    )
    p.add_argument("--dry-run", action="store_true", help="print config and trainable parameters, exit")
    p.add_argument("--resume", action="store_true", help="continue from <output_dir>/checkpoint")
    p.add_argument(
        "--launcher",
        choices=("local", "ray"),
        default="local",
        help="local: this process (or each torchrun process); ray: Ray Train TorchTrainer",
    )
    ray = p.add_argument_group("Ray Train (--launcher ray)")
    ray.add_argument(
        "--ray-workers",
        type=int,
        default=1,
        metavar="N",
        help="Ray Train workers (processes of the training; one GPU each when GPUs are used)",
    )
    ray.add_argument(
        "--ray-address",
        default=None,
        metavar="HOST:PORT",
        help="Ray cluster to join (default: start a Ray instance on this machine)",
    )
    ray.add_argument(
        "--use-gpu",
        choices=("auto", "yes", "no"),
        default="auto",
        help="auto: GPUs when the Ray cluster has any (decided by the cluster, not this driver)",
    )
    ray.add_argument(
        "--max-failures",
        type=int,
        default=3,
        metavar="N",
        help="restarts after a lost worker or node, each from the last checkpoint (-1: unlimited)",
    )
    ray.add_argument(
        "--ray-working-dir",
        default=None,
        metavar="DIR",
        help="ship DIR (e.g. this checkout) to every node as the workers' working directory, "
        "for nodes that lack the code",
    )
    p.add_argument("--list-fields", action="store_true", help="print every config field and its type, exit")
    return p


def _fields(args: argparse.Namespace) -> dict:
    fields = {}
    if args.no_pretrained:
        logger.warning("--no-pretrained is deprecated; use --pretrained none")
        fields["pretrained"] = None
    if args.pretrained is not None:
        fields["pretrained"] = cli.none_or(args.pretrained)
    if args.num_workers is not None:
        fields["num_workers"] = args.num_workers
    if args.out is not None:
        if any(o.split("=", 1)[0].strip() == "output_dir" for o in args.overrides):
            raise ConfigError("--out and --set output_dir=... both given: keep one")
        fields["output_dir"] = args.out
    return fields


def run(args: argparse.Namespace) -> int:
    if args.list_fields:
        print("\n".join(f"{name}: {getattr(t, '__name__', t)}" for name, t in field_types().items()))
        return 0
    cfg = resolve_config(args.preset, args.overrides, **_fields(args))  # ConfigError: a usage error, exit 2
    from training import launch

    if args.dry_run:
        print(launch.dry_run(cfg))
        return 0
    if args.launcher == "ray":
        from shared.errors import connect_ray

        connect_ray(args.ray_address)
        metrics = launch.run_ray(
            cfg,
            resume=args.resume,
            num_workers=args.ray_workers,
            use_gpu=args.use_gpu,
            max_failures=args.max_failures,
            working_dir=args.ray_working_dir,
            progress=cli.progress_enabled(args),
        )
    else:
        metrics = launch.run_local(cfg, resume=args.resume, progress=cli.progress_enabled(args))
    if metrics is not None:
        from training.reporting import recall_table

        print(recall_table(metrics))
    return 0


def main(argv=None) -> int:
    return cli.main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
