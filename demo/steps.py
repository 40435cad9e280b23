"""The demo's steps, one function each: the pipeline commands it runs (each printed before it runs, so it
can be copied) and the in-process evaluation of a model on a split, per kind of text.

The demo owns its output folder: a step whose output was made from other inputs (another demo data folder
after ``DISCOVLA_CACHE`` moved, another generator version) removes that output and runs again instead of
stopping (``_fresh``).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from shared import demo_videos
from shared.errors import DiscoVLAError
from training.pretrain_demo_clip import BACKBONE

logger = logging.getLogger(__name__)

ZERO_SHOT = "zero-shot CLIP (mean pooling)"
ABLATIONS = {  # name: (use_ivfusion, use_pimgalign, use_aligndistill)
    "image-level only (LoRA)": (False, False, False),
    "+ IVFusion": (True, False, False),
    "+ PImgAlign": (True, True, False),
    "+ AlignDistill (DiscoVLA)": (True, True, True),
}
CAPTION_WORDS = 24  # the longest reference description has 21 tokens
WORDS = 16
# Chosen on the val split by `python -m pipelines.demo --sweep` (demo/sweep.py; the table is in the README),
# one value for every row; alpha, beta and every other method weight stay the paper's.
LR = 1e-2
EPOCHS = 8  # 7 steps an epoch (240 videos, batch 32)
BATCH_SIZE = 32
DIAGNOSE_EVERY = 7  # loss diagnostics once an epoch (training.diagnostics)
PROGRESS_FLAG_COMMANDS = ("pipelines.caption", "pipelines.evaluate", "pipelines.train")  # take --no-progress


class DemoStepFailed(DiscoVLAError):
    """A pipeline command of the demo exited with an error (its own output says why)."""


def run_command(*args: str, quiet: bool = False) -> None:
    """``python -m <args>`` in a child process, printed first; a failure raises :class:`DemoStepFailed`.

    ``quiet``: no progress bars in the child (``--no-progress`` where the command has it, else
    ``TQDM_DISABLE``).
    """
    if quiet and args[0] in PROGRESS_FLAG_COMMANDS:
        args = (*args, "--no-progress")
    print(f"\n$ python -m {shlex.join(args)}", flush=True)
    env = {**os.environ, "TQDM_DISABLE": "1"} if quiet else None
    proc = subprocess.run([sys.executable, "-m", *args], env=env)
    if proc.returncode != 0:
        raise DemoStepFailed(f"`python -m {shlex.join(args)}` exited with status {proc.returncode}")


def data_stamp(data: Path) -> dict:
    """What the demo's outputs depend on: the data folder and its generator stamp (``DONE.json``)."""
    return {
        "data": str(Path(data).resolve()),
        "generated": json.loads((Path(data) / "DONE.json").read_text()),
    }


def _fresh(stamp_file: Path, stamp: dict, *outputs: Path) -> bool:
    """True when ``outputs`` were made from ``stamp``; otherwise removes them (the demo owns them) and
    returns False. ``stamp_file`` is written by :func:`_done` after the step succeeds."""
    if stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp:
        return True
    stale = [p for p in outputs if p.exists()]
    if stale:
        logger.warning("demo: %s made from other inputs (moved cache or new data): made again", stale[0])
        print(f"(outputs made from other demo data, made again: {', '.join(p.name for p in stale)})")
    for path in stale:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    stamp_file.unlink(missing_ok=True)
    return False


def _done(stamp_file: Path, stamp: dict) -> None:
    stamp_file.write_text(json.dumps(stamp, indent=1) + "\n")


def caption_sample(data: Path, out: Path, n_videos: int, quiet: bool) -> Path:
    """A few test videos captioned by the real caption command (tiny random LLaVA-NeXT), and their viewer."""
    from captioning.tiny_model import save_tiny_llava_next

    sample, shards, view = out / "caption-sample", out / "captions-llava", out / "captions-llava-view"
    stamp, stamp_file = {**data_stamp(data), "videos": n_videos}, out / "captions-llava.source.json"
    _fresh(stamp_file, stamp, sample, shards, view)
    sample.mkdir(parents=True, exist_ok=True)
    rows = (data / "test.jsonl").read_text().splitlines()[:n_videos]
    (sample / "test.jsonl").write_text("\n".join(rows) + "\n")
    model = out / "tiny-llava-next"
    if not (model / "config.json").exists():
        save_tiny_llava_next(model, seed=0)
    run_command(
        "pipelines.caption", "--dataset", "folder", "--split", "test", "--annotations", str(sample),
        "--video-root", str(data / "videos"), "--out", str(shards), "--backend", "transformers",
        "--model", str(model), "--frames", str(demo_videos.NUM_FRAMES), "--image-size", "64",
        "--max-tokens", "12", "--engines", "1", "--num-cpus", "2",
        quiet=quiet,
    )  # fmt: skip
    run_command(
        "pipelines.shards", "view", str(shards), str(view), "--video-root", str(data / "videos"), quiet=quiet
    )
    _done(stamp_file, stamp)
    return shards


def import_reference_captions(data: Path, out: Path, quiet: bool) -> Path:
    """The reference frame descriptions of every split as one caption set (imported once per data folder):
    training reads the train videos' captions, the evaluator's teacher report those of val and test."""
    captions, merged = out / "captions-reference", out / "frame_captions_all.json"
    stamp, stamp_file = data_stamp(data), out / "captions-reference.source.json"
    if _fresh(stamp_file, stamp, captions, merged):
        return captions
    every = {}
    for split in demo_videos.SPLITS:
        path = data / f"frame_captions_{split}.json"
        if path.is_file():
            every.update(json.loads(path.read_text()))
    out.mkdir(parents=True, exist_ok=True)
    merged.write_text(json.dumps(every, indent=1))
    run_command(
        "pipelines.shards", "import-json", str(merged), str(captions),
        "--dataset-name", "demo", "--split", "all", "--model", "reference-frame-descriptions",
        quiet=quiet,
    )  # fmt: skip
    _done(stamp_file, stamp)
    return captions


def train_args(
    data: Path,
    clip: Path,
    captions: Path,
    out: Path,
    flags: tuple[bool, bool, bool],
    quick: bool,
    seed: int,
    *,
    lr: float = LR,
    epochs: int | None = None,
    eval_split: str = "val",
) -> list[str]:
    """``pipelines.train`` arguments of one ablation row (``flags``) on the demo data; evaluated on
    ``eval_split`` during and after training (the val split: the test split is evaluated once, apart)."""
    ivf, pimg, distill = flags
    settings = {
        "dataset": "demo",
        "annotations": str(data),
        "video_root": str(data / "videos"),
        "captions": str(captions),
        "eval_split": eval_split,
        "backbone": BACKBONE,
        "pretrained": str(clip),
        "frames": demo_videos.NUM_FRAMES,
        "words": WORDS,
        "caption_words": CAPTION_WORDS,
        "h_v": 2,
        "h_l": 1,
        "batch_size": BATCH_SIZE,
        "lr": lr,
        "epochs": epochs or (3 if quick else EPOCHS),
        "eval_every": 0 if quick else 7,  # R@1 on val after every epoch: the curves
        "save_every": 0,
        "diagnose_every": 0 if quick else DIAGNOSE_EVERY,
        "use_ivfusion": ivf,
        "use_pimgalign": pimg,
        "use_aligndistill": distill,
        "output_dir": str(out),
        "num_workers": 0,
        "seed": seed,
    }
    args = ["pipelines.train", "--preset", "demo"]
    for key, value in settings.items():
        args += ["--set", f"{key}={str(value).lower() if isinstance(value, bool) else value}"]
    return args


def kind_groups(data: Path, split: str, items) -> dict[str, list[int]]:
    """``{"static": [item index], "change": [...]}`` of a demo split's items (``kind`` of its jsonl rows)."""
    kinds = {}
    for line in (Path(data) / f"{split}.jsonl").read_text().splitlines():
        row = json.loads(line)
        kinds[row["video_id"]] = row["kind"]
    return {
        kind: [i for i, it in enumerate(items) if kinds[it.video_id] == kind] for kind in demo_videos.KINDS
    }


def evaluate_split(
    data: Path, clip: Path, adapters: Path | None, captions: Path, split: str = "test"
) -> dict:
    """Retrieval on ``split`` in this process (``training.evaluate``): all texts, each kind of text against
    the whole gallery (``groups``) and the teacher report (S_img of the reference descriptions)."""
    from shared.shards import load_caption_set
    from training.data import clip_tokenizer
    from training.evaluate import build_evaluation, evaluate

    model, dataset, _ = build_evaluation(
        "demo",
        split,
        adapters=adapters,
        annotations=str(data),
        backbone=BACKBONE,
        pretrained=str(clip),
        frames=demo_videos.NUM_FRAMES,
        words=WORDS,
    )
    return evaluate(
        model,
        dataset,
        captions=load_caption_set(captions, num_frames=demo_videos.NUM_FRAMES),
        caption_tokenizer=clip_tokenizer(BACKBONE, CAPTION_WORDS),
        groups=kind_groups(data, split, dataset.items),
        progress=False,
    )


def search_step(run, data: Path, adapters: Path, out: Path, pretrained: Path | None = None) -> None:
    """The demo's last step: index its test videos with trained adapters, print one query's top 3.

    ``run(*args)`` runs ``python -m <args>`` (:func:`run_command`); the query is the first test video's
    text, so that video is expected among the three.
    """
    query = json.loads((Path(data) / "test.jsonl").read_text().splitlines()[0])["text"]
    index = ["pipelines.index", "--dataset", "demo", "--split", "test", "--annotations", str(data)]
    index += ["--adapters", str(adapters), "--out", str(out), "--no-progress"]
    run(*index, *(["--pretrained", str(pretrained)] if pretrained else []))
    run("pipelines.search", str(out), query, "-k", "3")
