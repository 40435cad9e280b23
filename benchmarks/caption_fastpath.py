"""How fast ``python -m pipelines.caption`` answers when no captioning is needed: wall time of the whole
command, interpreter start included, for a re-run of a finished run ("nothing to do") and for runs whose
settings clash with the output (refused), next to the first run that did the work.

    python -m benchmarks.caption_fastpath [--videos 8] [--repeats 3] [--model DIR]
    python -m benchmarks.caption --fast-path ...          # the same

The first run is real: a local Ray, the transformers engine on CPU, a tiny random LLaVA-NeXT
(``captioning.tiny_model``) unless ``--model`` is given, generated videos. The later runs are the same
command, then the same command with another ``--prompt`` and with another ``--frames``; each is run
``--repeats`` times and the median and the slowest are printed, with whether the process imported Ray
(read from ``python -X importtime``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(command: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    """Wall seconds of ``python -X importtime -m pipelines.caption <command>``, and its result."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pipelines.caption", *command],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return time.perf_counter() - started, done


def imported_ray(done: subprocess.CompletedProcess) -> bool:
    modules = {
        line.rsplit("|", 1)[-1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }
    return "ray" in modules


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=8, help="generated videos in the run")
    p.add_argument("--repeats", type=int, default=3, help="runs of each fast command")
    p.add_argument("--model", help="model directory (default: a tiny random LLaVA-NeXT)")
    args = p.parse_args(argv)
    from benchmarks.decode import make_videos

    with tempfile.TemporaryDirectory(prefix="discovla-fastpath-bench-") as tmp:
        root = Path(tmp)
        if args.model is None:
            from captioning.tiny_model import save_tiny_llava_next

            args.model = str(save_tiny_llava_next(root / "tiny-llava"))
        (root / "videos").mkdir()
        videos = make_videos(root / "videos", args.videos, 2.0, (160, 120))
        annotations = root / "test.jsonl"
        annotations.write_text(
            "".join(json.dumps({"video_id": p.stem, "text": "t"}) + "\n" for p, _ in videos)
        )
        command = [
            "--dataset",
            "folder",
            "--split",
            "test",
            "--annotations",
            str(annotations),
            "--video-root",
            str(root / "videos"),
            "--out",
            str(root / "out"),
            "--model",
            args.model,
            "--backend",
            "transformers",
            "--frames",
            "4",
            "--max-tokens",
            "4",
            "--image-size",
            "64",
            "--gpus",
            "0",
            "--engines",
            "1",
            "--shard-size",
            "4",
            "--no-progress",
        ]
        first, done = timed(command)
        if done.returncode != 0:
            raise RuntimeError(f"the first caption run failed:\n{done.stdout}\n{done.stderr[-3000:]}")
        cases = {
            "re-run (nothing to do)": (command, 0),
            "other --prompt (refused)": ([*command, "--prompt", "What is happening?"], 1),
            "other --frames (refused)": ([*command, "--frames", "6"], 1),
        }
        print(
            f"first run ({args.videos} videos x 4 frames, Ray + tiny LLaVA-NeXT on CPU): {first:.1f} s, "
            f"Ray imported: {imported_ray(done)}"
        )
        print(f"{'command':<26} {'median s':>9} {'slowest s':>10} {'exit':>5} {'Ray imported':>13}")
        for name, (cmd, expect) in cases.items():
            runs = [timed(cmd) for _ in range(args.repeats)]
            codes = {d.returncode for _, d in runs}
            if codes != {expect}:
                raise RuntimeError(f"{name}: exit {codes}, expected {expect}:\n{runs[0][1].stderr[-2000:]}")
            seconds = [s for s, _ in runs]
            print(
                f"{name:<26} {statistics.median(seconds):>9.2f} {max(seconds):>10.2f} {expect:>5} "
                f"{any(imported_ray(d) for _, d in runs)!s:>13}"
            )


if __name__ == "__main__":
    main()
