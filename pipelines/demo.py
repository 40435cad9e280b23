"""The embedded demo: caption, train and evaluate end to end on a generated dataset, on a laptop CPU.

    python -m pipelines.demo [--out outputs/demo] [--quick]

Runs the real command-line pipelines, each printed before it runs so you can copy it:
1. generate the ``demo`` dataset and pretrain a small image CLIP on its frames (cached after the first run);
2. ``pipelines.caption`` with the transformers backend and a tiny random LLaVA-NeXT on a few test videos
   (the stage, its shards and viewer; random weights write random words);
3. ``pipelines.shards import-json`` of the reference per-frame descriptions: the caption set for training,
   through the same path as the captions released with the paper;
4. ``pipelines.evaluate --adapters none``: zero-shot CLIP (mean-pooled frames);
5. ``pipelines.train`` four times, the paper's ablation: image-level only (LoRA), + IVFusion, + PImgAlign,
   + AlignDistill (the full method); each evaluates on the test split at the end;
6. a recall table in the terminal and as HTML/PNG (``<out>/results``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from captioning.tiny_model import save_tiny_llava_next
from shared import demo_videos
from training.metrics import save_table
from training.pretrain_demo_clip import BACKBONE, ensure_demo_clip

ABLATIONS = {  # name: (use_ivfusion, use_pimgalign, use_aligndistill)
    "image-level only (LoRA)": (False, False, False),
    "+ IVFusion": (True, False, False),
    "+ PImgAlign": (True, True, False),
    "+ AlignDistill (DiscoVLA)": (True, True, True),
}


def run(*args: str) -> None:
    cmd = [sys.executable, "-m", *args]
    print(f"\n$ python -m {shlex.join(args)}", flush=True)
    subprocess.run(cmd, check=True)


def caption_sample(data: Path, out: Path, n_videos: int) -> Path:
    """A few test videos captioned by the real caption command (tiny random LLaVA-NeXT)."""
    sample = out / "caption-sample"
    sample.mkdir(parents=True, exist_ok=True)
    rows = (data / "test.jsonl").read_text().splitlines()[:n_videos]
    (sample / "test.jsonl").write_text("\n".join(rows) + "\n")
    model = out / "tiny-llava-next"
    if not (model / "config.json").exists():
        save_tiny_llava_next(model, seed=0)
    shards = out / "captions-llava"
    run(
        "pipelines.caption",
        "--dataset",
        "folder",
        "--split",
        "test",
        "--annotations",
        str(sample),
        "--video-root",
        str(data / "videos"),
        "--out",
        str(shards),
        "--backend",
        "transformers",
        "--model",
        str(model),
        "--frames",
        str(demo_videos.NUM_FRAMES),
        "--image-size",
        "64",
        "--max-tokens",
        "12",
        "--workers",
        "1",
        "--num-cpus",
        "2",
    )
    run(
        "pipelines.shards",
        "view",
        str(shards),
        str(out / "captions-llava-view"),
        "--video-root",
        str(data / "videos"),
    )
    return shards


def train_args(
    data: Path, clip: Path, captions: Path, out: Path, flags: tuple[bool, bool, bool], quick: bool
) -> list[str]:
    ivf, pimg, distill = flags
    settings = {
        "dataset": "demo",
        "annotations": str(data),
        "video_root": str(data / "videos"),
        "captions": str(captions),
        "backbone": BACKBONE,
        "pretrained": str(clip),
        "frames": demo_videos.NUM_FRAMES,
        "words": 16,
        "caption_words": 16,
        "h_v": 2,
        "h_l": 1,
        "batch_size": 32,
        "lr": 2e-3,
        "epochs": 6 if quick else 16,
        "eval_every": 14,
        "save_every": 0,
        "use_ivfusion": ivf,
        "use_pimgalign": pimg,
        "use_aligndistill": distill,
        "output_dir": str(out),
        "num_workers": 0,
        "seed": 0,
    }
    args = ["pipelines.train", "--preset", "demo"]
    for key, value in settings.items():
        args += ["--set", f"{key}={str(value).lower() if isinstance(value, bool) else value}"]
    return args


def ablation_table(table: dict[str, dict]) -> str:
    """One markdown row per model: t2v R@1/R@5/R@10/MnR and v2t R@1/R@5/MnR."""
    head = "| model | t2v R@1 | t2v R@5 | t2v R@10 | t2v MnR | v2t R@1 | v2t R@5 | v2t MnR |"
    lines = [head, "|---" + "|---:" * 7 + "|"]
    for name, m in table.items():
        t, v = m["t2v"], m["v2t"]
        cells = [t["R1"], t["R5"], t["R10"], t["MnR"], v["R1"], v["R5"], v["MnR"]]
        lines.append(f"| {name} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description="DiscoVLA demo: caption, train and evaluate on generated videos."
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--quick", action="store_true", help="fewer steps (used by the test suite)")
    parser.add_argument("--caption-videos", type=int, default=4)
    args = parser.parse_args(argv)
    t0 = time.time()
    out = args.out.resolve()
    data = demo_videos.ensure_demo_data()
    clip = ensure_demo_clip(steps=60 if args.quick else 300)
    caption_sample(data, out, args.caption_videos)

    captions = out / "captions-reference"
    if not (captions / "manifest.json").exists():
        run(
            "pipelines.shards",
            "import-json",
            str(data / "frame_captions_train.json"),
            str(captions),
            "--dataset-name",
            "demo",
            "--split",
            "train",
            "--model",
            "reference-frame-descriptions",
        )

    results = {}
    run(
        "pipelines.evaluate",
        "--dataset",
        "demo",
        "--split",
        "test",
        "--annotations",
        str(data),
        "--adapters",
        "none",
        "--backbone",
        BACKBONE,
        "--pretrained",
        str(clip),
        "--frames",
        str(demo_videos.NUM_FRAMES),
        "--words",
        "16",
        "--out",
        str(out / "zero-shot"),
    )
    results["zero-shot CLIP (mean pooling)"] = json.loads((out / "zero-shot" / "metrics.json").read_text())
    for i, (name, flags) in enumerate(ABLATIONS.items()):
        run_dir = out / f"train-{i}"
        run(*train_args(data, clip, captions, run_dir, flags, args.quick))
        results[name] = json.loads((run_dir / "adapters" / "last.json").read_text())["metrics"]

    table = {name: {k: m[k] for k in ("t2v", "v2t")} for name, m in results.items()}
    (out / "results").mkdir(parents=True, exist_ok=True)
    (out / "results" / "demo_results.json").write_text(json.dumps(table, indent=2, sort_keys=True))
    text = ablation_table(table)
    (out / "results" / "demo_results.md").write_text(text + "\n")
    print(
        "\nDemo results: retrieval on the 60 held-out demo videos (last-epoch adapters, CLIP4Clip metrics)\n"
    )
    print(text)
    save_table(table["+ AlignDistill (DiscoVLA)"], out / "results", "DiscoVLA on the demo test split")
    print(
        f"\nDone in {time.time() - t0:.0f} s. Results: {out / 'results'}; caption viewer: "
        f"{out / 'captions-llava-view' / 'index.html'}; training curves: {out / 'train-3'}"
    )


if __name__ == "__main__":
    main()
