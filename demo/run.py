"""The whole demo: data, demo CLIP, caption sample, reference captions, zero-shot, the ablation trainings
per seed, one evaluation of each model on the test split, results, then the search step.

:func:`run_demo` is what ``python -m pipelines.demo`` calls. The seed changes the trainings (adapter
initialisation, batch order); the data, the demo CLIP and the zero-shot row are the same for every seed.
"""

from __future__ import annotations

import json
import resource
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from demo import steps
from demo.results import write_results
from shared import demo_videos
from shared.errors import DiscoVLAError
from training.pretrain_demo_clip import STEPS, ensure_demo_clip


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


def train_all(data, clip, captions, out: Path, seeds: list[int], quick: bool, quiet: bool, jobs: int = 1):
    """The four ablation trainings of every seed (each evaluated on val while it trains), ``jobs`` training
    commands at a time; returns ``{seed: {model: run folder}}``."""
    runs = {
        seed: {name: out / f"seed-{seed}" / f"train-{i}" for i, name in enumerate(steps.ABLATIONS)}
        for seed in seeds
    }
    commands = [
        steps.train_args(data, clip, captions, runs[seed][name], flags, quick, seed)
        for seed in seeds
        for name, flags in steps.ABLATIONS.items()
    ]
    with ThreadPoolExecutor(max_workers=jobs) as pool:  # each thread waits on one child process
        for done in pool.map(lambda args: steps.run_command(*args, quiet=quiet), commands):
            del done
    return runs


def evaluate_all(data, clip, captions, runs: dict[int, dict[str, Path]]) -> dict[int, dict[str, dict]]:
    """Each model's last-epoch adapters evaluated once on the test split (demo.steps.evaluate_split)."""
    return {
        seed: {
            name: steps.evaluate_split(data, clip, d / "adapters" / "last", captions)
            for name, d in dirs.items()
        }
        for seed, dirs in runs.items()
    }


def run_demo(
    out: Path,
    *,
    seeds: int = 1,
    first_seed: int = 0,
    quick: bool = False,
    caption_videos: int = 4,
    quiet: bool = False,
    jobs: int = 1,
) -> int:
    """The demo end to end into ``out``; prints the results and the time of each step. ``jobs``: training
    commands run at once (the results do not depend on it)."""
    for name, value in (("--seeds", seeds), ("--jobs", jobs)):
        if value < 1:
            raise DiscoVLAError(f"{name} must be at least 1, got {value}")
    t0 = time.perf_counter()
    out = Path(out).resolve()
    clock = StepClock()
    data = clock("generate demo data (cached)", demo_videos.ensure_demo_data, progress=not quiet)
    clip = clock(
        "pretrain demo CLIP (cached)", ensure_demo_clip, steps=40 if quick else STEPS, progress=not quiet
    )
    clip_metrics = json.loads(clip.with_suffix(".json").read_text())
    clock("caption sample (tiny LLaVA-NeXT)", steps.caption_sample, data, out, caption_videos, quiet)
    captions = clock("import reference captions", steps.import_reference_captions, data, out, quiet)
    print("\nzero-shot CLIP on the test split (in process: training.evaluate, per kind, with the teacher)")
    zero = clock("zero-shot evaluation", steps.evaluate_split, data, clip, None, captions)
    seed_list = list(range(first_seed, first_seed + seeds))
    runs = clock(
        f"ablation trainings, seeds {seed_list}",
        train_all,
        data,
        clip,
        captions,
        out,
        seed_list,
        quick,
        quiet,
        jobs,
    )
    trained = clock("test evaluations", evaluate_all, data, clip, captions, runs)
    evaluations = {seed: {steps.ZERO_SHOT: zero, **trained[seed]} for seed in seed_list}
    run_dirs = {seed: {steps.ZERO_SHOT: None, **runs[seed]} for seed in seed_list}
    settings = {"lr": steps.LR, "epochs": 3 if quick else steps.EPOCHS, "batch_size": steps.BATCH_SIZE}
    text = write_results(out, evaluations, run_dirs, clock.steps, clip_metrics, settings)
    print(f"\nDemo results: {text}\n")
    print(clock.table())
    print(
        f"\nDone in {time.perf_counter() - t0:.0f} s. Results page: {out / 'results' / 'index.html'}; "
        f"caption viewer: {out / 'captions-llava-view' / 'index.html'}"
    )
    adapters = out / f"seed-{max(evaluations)}" / "train-3" / "adapters" / "last"
    steps.search_step(lambda *a: steps.run_command(*a, quiet=quiet), data, adapters, out / "search-index")
    return 0
