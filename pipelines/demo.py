"""The embedded demo: caption, train and evaluate end to end on a generated dataset, on a laptop CPU.

Runs the real command-line pipelines, each printed before it runs so you can copy it (demo/, ARCHITECTURE.md):
1. generate the ``demo`` dataset (train / val / test; static and change texts at the benchmarks' mix) and
   pretrain a small image CLIP on its frames (cached after the first run);
2. ``pipelines.caption`` with the transformers backend and a tiny random LLaVA-NeXT on a few test videos
   (the stage, its shards and viewer; random weights write random words);
3. ``pipelines.shards import-json`` of the reference per-frame descriptions: the caption set for training
   (and for the evaluator's teacher report), through the same path as the captions released with the paper;
4. ``pipelines.train`` four times per seed, the paper's ablation: image-level only (LoRA), + IVFusion,
   + PImgAlign, + AlignDistill (the full method), evaluated on val while training, with loss diagnostics;
5. zero-shot CLIP and each trained model evaluated once on the test split: R@1 per kind of text, and the
   teacher's (S_img) retrieval beside each row; ``<out>/results/index.html`` with the tables, the ablation
   picture and the loss diagnostics picture, and the time each step took;
6. ``pipelines.index`` of the test videos with the full method's adapters (last seed) and
   ``pipelines.search``'s top 3 for the first test text.

    python -m pipelines.demo                    # one seed (make demo)
    python -m pipelines.demo --seeds 3          # the README's table: mean ± std over seeds 0, 1, 2
    python -m pipelines.demo --seeds 3 --jobs 3 # the same, three training commands at a time
    python -m pipelines.demo --sweep            # the val sweep that chose the learning rate and epochs
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipelines import cli


def build_parser():
    p = cli.parser("demo", __doc__)
    p.add_argument("--out", type=Path, default=None, help="output folder (default: outputs/demo[-sweep])")
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        metavar="N",
        help="train the ablation with N seeds, mean ± std (default: 1)",
    )
    p.add_argument("--seed", type=int, default=0, help="the first seed (default: 0): seeds S, S+1, ...")
    p.add_argument(
        "--quick",
        action="store_true",
        help="the test suite's smoke run: far too few steps to learn, no evaluation during training",
    )
    p.add_argument(
        "--caption-videos",
        type=int,
        default=4,
        metavar="N",
        help="test videos captioned by the tiny LLaVA-NeXT",
    )
    p.add_argument(
        "--jobs", type=int, default=1, metavar="N", help="training commands run at once (default: 1)"
    )
    p.add_argument(
        "--sweep", action="store_true", help="run the val sweep of lr and epochs instead (demo/sweep.py)"
    )
    return p


def run(args) -> int:
    quiet = not cli.progress_enabled(args)
    if args.sweep:
        from demo.sweep import run_sweep

        run_sweep(args.out or Path("outputs/demo-sweep"), quiet=quiet)
        return 0
    from demo.run import run_demo

    return run_demo(
        args.out or Path("outputs/demo"),
        seeds=args.seeds,
        first_seed=args.seed,
        quick=args.quick,
        caption_videos=args.caption_videos,
        quiet=quiet,
        jobs=args.jobs,
    )


def main(argv=None) -> int:
    return cli.main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
