"""The embedded demo: caption, train and evaluate end to end on a generated dataset, on a laptop CPU.

Runs the real command-line pipelines, each printed before it runs so you can copy it:
1. generate the ``demo`` dataset and pretrain a small image CLIP on its frames (cached after the first run);
2. ``pipelines.caption`` with the transformers backend and a tiny random LLaVA-NeXT on a few test videos
   (the stage, its shards and viewer; random weights write random words);
3. ``pipelines.shards import-json`` of the reference per-frame descriptions: the caption set for training,
   through the same path as the captions released with the paper;
4. ``pipelines.evaluate --adapters none``: zero-shot CLIP (mean-pooled frames);
5. ``pipelines.train`` four times per seed, the paper's ablation: image-level only (LoRA), + IVFusion,
   + PImgAlign, + AlignDistill (the full method); each evaluates on the test split at the end;
6. the ablation as mean ± std over the seeds: a table in the terminal, ``<out>/results/index.html`` with
   every model side by side in one picture (``ablation.png``), and the time each step took;
7. ``pipelines.index`` of the test videos with the full method's adapters (last seed) and
   ``pipelines.search``'s top 3 for the first test text.

    python -m pipelines.demo                    # one seed (make demo)
    python -m pipelines.demo --seeds 3          # the README's table: mean ± std over seeds 0, 1, 2

The seed changes the trainings (adapter initialisation, batch order); the data, the demo CLIP and the
zero-shot row are the same for every seed.
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

from captioning.tiny_model import save_tiny_llava_next
from pipelines import cli
from pipelines.search import demo_step
from shared import demo_videos
from shared.errors import DiscoVLAError
from training import ablation_report
from training.pretrain_demo_clip import BACKBONE, STEPS, ensure_demo_clip

ZERO_SHOT = "zero-shot CLIP (mean pooling)"
ABLATIONS = {  # name: (use_ivfusion, use_pimgalign, use_aligndistill)
    "image-level only (LoRA)": (False, False, False),
    "+ IVFusion": (True, False, False),
    "+ PImgAlign": (True, True, False),
    "+ AlignDistill (DiscoVLA)": (True, True, True),
}
CAPTION_WORDS = 24  # the longest reference description has 21 tokens


class DemoStepFailed(DiscoVLAError):
    """A pipeline command of the demo exited with an error (its own output says why)."""


class StepClock:
    """Wall and CPU seconds of each demo step (CPU: this process and the commands it ran)."""

    def __init__(self):
        self.steps: list[dict] = []

    @staticmethod
    def _cpu() -> float:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    def __call__(self, name: str, fn, *args, **kwargs):
        wall, cpu = time.perf_counter(), self._cpu()
        result = fn(*args, **kwargs)
        self.steps.append(
            {
                "step": name,
                "wall_s": round(time.perf_counter() - wall, 1),
                "cpu_s": round(self._cpu() - cpu, 1),
            }
        )
        return result

    def table(self) -> str:
        width = max(len(s["step"]) for s in self.steps)
        lines = [f"{'step':<{width}}  {'wall s':>7}  {'CPU s':>7}"]
        lines += [f"{s['step']:<{width}}  {s['wall_s']:>7.1f}  {s['cpu_s']:>7.1f}" for s in self.steps]
        total_wall, total_cpu = sum(s["wall_s"] for s in self.steps), sum(s["cpu_s"] for s in self.steps)
        return "\n".join(lines + [f"{'total':<{width}}  {total_wall:>7.1f}  {total_cpu:>7.1f}"])


PROGRESS_FLAG_COMMANDS = ("pipelines.caption", "pipelines.evaluate", "pipelines.train")  # take --no-progress


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


def caption_sample(data: Path, out: Path, n_videos: int, quiet: bool) -> Path:
    """A few test videos captioned by the real caption command (tiny random LLaVA-NeXT)."""
    sample = out / "caption-sample"
    sample.mkdir(parents=True, exist_ok=True)
    rows = (data / "test.jsonl").read_text().splitlines()[:n_videos]
    (sample / "test.jsonl").write_text("\n".join(rows) + "\n")
    model = out / "tiny-llava-next"
    if not (model / "config.json").exists():
        save_tiny_llava_next(model, seed=0)
    shards = out / "captions-llava"
    run_command(
        "pipelines.caption", "--dataset", "folder", "--split", "test", "--annotations", str(sample),
        "--video-root", str(data / "videos"), "--out", str(shards), "--backend", "transformers",
        "--model", str(model), "--frames", str(demo_videos.NUM_FRAMES), "--image-size", "64",
        "--max-tokens", "12", "--engines", "1", "--num-cpus", "2",
        quiet=quiet,
    )  # fmt: skip
    run_command(
        "pipelines.shards", "view", str(shards), str(out / "captions-llava-view"),
        "--video-root", str(data / "videos"),
        quiet=quiet,
    )  # fmt: skip
    return shards


def import_reference_captions(data: Path, out: Path, quiet: bool) -> Path:
    """The reference frame descriptions of the train split as a caption set (imported once)."""
    captions = out / "captions-reference"
    if not (captions / "manifest.json").exists():
        run_command(
            "pipelines.shards", "import-json", str(data / "frame_captions_train.json"), str(captions),
            "--dataset-name", "demo", "--split", "train", "--model", "reference-frame-descriptions",
            quiet=quiet,
        )  # fmt: skip
    return captions


def zero_shot(data: Path, clip: Path, out: Path, quiet: bool) -> dict:
    run_command(
        "pipelines.evaluate", "--dataset", "demo", "--split", "test", "--annotations", str(data),
        "--adapters", "none", "--backbone", BACKBONE, "--pretrained", str(clip),
        "--frames", str(demo_videos.NUM_FRAMES), "--words", "16", "--out", str(out / "zero-shot"),
        quiet=quiet,
    )  # fmt: skip
    return json.loads((out / "zero-shot" / "metrics.json").read_text())


def train_args(
    data: Path, clip: Path, captions: Path, out: Path, flags: tuple[bool, bool, bool], quick: bool, seed: int
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
        "caption_words": CAPTION_WORDS,
        "h_v": 2,
        "h_l": 1,
        "batch_size": 32,
        "lr": 1e-2,  # 2e-3 barely beat zero-shot on t2v R@1; 2e-2 overshoots
        "epochs": 3 if quick else 8,  # 7 steps an epoch
        "eval_every": 0 if quick else 14,  # curves of R@1 over training
        "save_every": 0,
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


def train_ablation(
    data: Path, clip: Path, captions: Path, out: Path, quick: bool, seed: int, quiet: bool
) -> dict:
    """The four ablation trainings of one seed; returns each model's last-epoch test metrics."""
    results = {}
    for i, (name, flags) in enumerate(ABLATIONS.items()):
        run_dir = out / f"seed-{seed}" / f"train-{i}"
        run_command(*train_args(data, clip, captions, run_dir, flags, quick, seed), quiet=quiet)
        metrics = json.loads((run_dir / "adapters" / "last.json").read_text())["metrics"]
        results[name] = {k: metrics[k] for k in ablation_report.DIRECTIONS}
    return results


def write_results(out: Path, runs: dict[int, dict], clock: StepClock, clip_metrics: dict) -> str:
    """``results/``: demo_results.json/.md, ablation.png, index.html, timings.json; returns the table."""
    results = out / "results"
    results.mkdir(parents=True, exist_ok=True)
    summary = ablation_report.summarize(runs)
    n = len(runs)
    table = ablation_report.markdown_table(summary, n)
    spread = f"mean ± std over seeds {sorted(runs)}" if n > 1 else f"seed {next(iter(runs))}"
    title = f"DiscoVLA demo ablation: 60 held-out videos, last-epoch adapters, {spread}"
    ablation_report.plot_ablation(summary, results / "ablation.png", title)
    last_seed = max(runs)
    links = {
        "training curves of the full method (last seed)": f"../seed-{last_seed}/train-3/curves.png",
        "captions of the tiny random LLaVA-NeXT (the captioning stage)": "../captions-llava-view/index.html",
        "zero-shot evaluation": "../zero-shot/metrics.json",
    }
    notes = (
        f"Demo CLIP: held-out frame-to-description R@1 {clip_metrics.get('frame_to_description_r1_test', 0):.1f} %. "
        "Every text query tells a video's story; every frame description also names the video's look."
    )
    (results / "index.html").write_text(
        ablation_report.results_page(summary, n, "ablation.png", title, links, notes)
    )
    (results / "demo_results.md").write_text(f"{title}\n\n{table}\n")
    payload = {
        "seeds": sorted(runs),
        "runs": {str(s): r for s, r in runs.items()},
        "summary": summary,
        "demo_clip": clip_metrics,
    }
    (results / "demo_results.json").write_text(json.dumps(payload, indent=2) + "\n")
    (results / "timings.json").write_text(json.dumps(clock.steps, indent=2) + "\n")
    return f"{title}\n\n{table}"


def build_parser():
    p = cli.parser("demo", __doc__)
    p.add_argument(
        "--out", type=Path, default=Path("outputs/demo"), help="output folder (default: %(default)s)"
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        metavar="N",
        help="train the ablation with N seeds and report mean ± std (default: 1)",
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
        help="test videos captioned by the tiny LLaVA-NeXT (default: 4)",
    )
    return p


def run(args) -> int:
    if args.seeds < 1:
        raise DiscoVLAError(f"--seeds must be at least 1, got {args.seeds}")
    quiet = not cli.progress_enabled(args)
    t0 = time.perf_counter()
    out = args.out.resolve()
    clock = StepClock()
    data = clock("generate demo data (cached)", demo_videos.ensure_demo_data)
    clip_steps = 40 if args.quick else STEPS
    clip = clock("pretrain demo CLIP (cached)", ensure_demo_clip, steps=clip_steps, progress=not quiet)
    clip_metrics = json.loads(clip.with_suffix(".json").read_text())
    clock("caption sample (tiny LLaVA-NeXT)", caption_sample, data, out, args.caption_videos, quiet)
    captions = clock("import reference captions", import_reference_captions, data, out, quiet)
    zero = clock("zero-shot evaluation", zero_shot, data, clip, out, quiet)
    runs = {}
    for seed in range(args.seed, args.seed + args.seeds):
        trained = clock(
            f"4 trainings, seed {seed}", train_ablation, data, clip, captions, out, args.quick, seed, quiet
        )
        runs[seed] = {ZERO_SHOT: {k: zero[k] for k in ablation_report.DIRECTIONS}, **trained}
    text = write_results(out, runs, clock, clip_metrics)
    print(f"\nDemo results: {text}\n")
    print(clock.table())
    print(
        f"\nDone in {time.perf_counter() - t0:.0f} s. Results page: {out / 'results' / 'index.html'}; "
        f"caption viewer: {out / 'captions-llava-view' / 'index.html'}"
    )
    adapters = out / f"seed-{max(runs)}" / "train-3" / "adapters" / "last"
    demo_step(lambda *args: run_command(*args, quiet=quiet), data, adapters, out / "search-index")
    return 0


def main(argv=None) -> int:
    return cli.main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
