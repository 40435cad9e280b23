"""Train DiscoVLA adapters on a frozen CLIP.

    python -m pipelines.train --preset msrvtt --set captions=CAPTIONS [--set key=value ...]
                              [--dry-run] [--no-pretrained] [--resume] [--launcher local|ray]

Presets live in training/presets/*.yaml (msrvtt = the reference recipe; didemo, activitynet, lsmdc, demo)
or pass a YAML path. Any config field is overridden with ``--set key=value`` (repeatable; YAML values:
``--set lr=3e-4 --set pretrained=null --set use_ivfusion=false``); ``--list-fields`` shows them all.

Many GPUs: ``torchrun --nproc-per-node 4 -m pipelines.train --preset msrvtt ...`` (DDP; one node or
several with torchrun's rendezvous options), or ``--launcher ray --ray-workers 4`` on a Ray cluster.
The global batch stays ``batch_size`` whatever the number of processes.
``--dry-run`` prints the resolved config and the trainable parameters per group, then exits
(add ``--no-pretrained`` to build with random weights, offline).
Exit status 2 with the cause on standard error for a bad preset, field or value.
"""

from __future__ import annotations

import argparse
import logging
import sys

from training.config import ConfigError, field_types, list_presets, resolve_config


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.train", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="msrvtt", help=f"one of {list_presets()} or a .yaml path")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config field (repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="print config and trainable parameters, exit")
    parser.add_argument("--no-pretrained", action="store_true", help="random CLIP weights (pretrained=null)")
    parser.add_argument("--resume", action="store_true", help="continue from <output_dir>/checkpoint")
    parser.add_argument("--launcher", choices=("local", "ray"), default="local",
                        help="local: this process (or each torchrun process); ray: Ray Train TorchTrainer")
    parser.add_argument("--ray-workers", type=int, default=1, help="Ray Train workers (one GPU each on GPU nodes)")
    parser.add_argument("--ray-address", default=None, help="ray.init address (default: start a local Ray)")
    parser.add_argument("--list-fields", action="store_true", help="print every config field and its type, exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.list_fields:
        print("\n".join(f"{name}: {getattr(t, '__name__', t)}" for name, t in field_types().items()))
        return 0
    try:
        extra = {"pretrained": None} if args.no_pretrained else {}
        cfg = resolve_config(args.preset, args.overrides, **extra)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from training import launch

    if args.dry_run:
        print(launch.dry_run(cfg))
        return 0
    if args.launcher == "ray":
        import ray

        ray.init(address=args.ray_address)
        metrics = launch.run_ray(cfg, resume=args.resume, num_workers=args.ray_workers)
    else:
        metrics = launch.run_local(cfg, resume=args.resume)
    if metrics is not None:
        from training.plots import recall_table

        print(recall_table(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
