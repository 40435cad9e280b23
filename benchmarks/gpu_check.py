"""One table of GPU figures: training step, evaluation and caption engines (``scripts/gpu_check.sh``).

    scripts/gpu_check.sh [--budget-s 540] [--rows train-b32-fp32,...] [--vllm-python PATH]

Rows (each in its own subprocess, so that one failure, hang or out-of-memory prints an error row and
the others still run; each gets what is left of one global time budget):

- ``train-{b32,b16}-{fp32,bf16}``: one DiscoVLA training step (random ViT-B/32 or B/16 weights, B = 32
  videos x F = 12 frames, 32-token query captions and 12 pseudo captions per video, the three losses,
  backward, clipping, AdamW; bf16 = autocast), median s/step of 5 after 2 warm-up steps, peak GPU memory;
- ``eval-b32-{fp32,bf16}``: video features for evaluation (``encode_video`` without gradients), 64
  videos x 12 frames per batch, videos/s and peak GPU memory (model only: no decoding);
- ``caption-{transformers,vllm}``: the tiny random LLaVA-NeXT (``captioning.tiny_model``) behind the
  project's caption engine, 336-px frames, 32 new tokens, frames/s after a warm-up call.

Installs nothing: vLLM rows need vLLM importable by ``--vllm-python`` (default: this interpreter).
Without a CUDA device it says so and exits 0 with nothing measured. Exit status 1 when a row did not
produce its figure. ``--device cpu --tiny`` runs the same rows on the CPU with tiny models (a check of
the plumbing, not a measurement).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import torch

from pipelines import cli

TRAIN_ROWS = [f"train-{b}-{p}" for b in ("b32", "b16") for p in ("fp32", "bf16")]
EVAL_ROWS = ["eval-b32-fp32", "eval-b32-bf16"]
CAPTION_ROWS = ["caption-transformers", "caption-vllm"]
ROWS = TRAIN_ROWS + EVAL_ROWS + CAPTION_ROWS
BACKBONES = {"b32": "ViT-B-32", "b16": "ViT-B-16"}
ROW_CAP_S = {"caption-vllm": 300}  # vLLM's start-up (profiling, CUDA graphs) takes minutes; others less
DEFAULT_CAP_S = 150
MIN_START_S = 10  # a row is not started with less budget than this left
RESULT_MARK = "gpu_check result: "  # prefix of the one stdout line that carries a row's JSON result


@dataclass(frozen=True)
class Sizes:
    """Workload of every row; ``tiny`` shrinks it for CPU checks of the plumbing."""

    backbone: dict
    batch: int = 32
    frames: int = 12
    words: int = 32
    steps: int = 5
    warmup: int = 2
    eval_batch: int = 64
    eval_batches: int = 5
    caption_frames: int = 128
    caption_per_call: int = 32
    caption_tokens: int = 32
    image_size: int = 336


FULL = Sizes(backbone=BACKBONES)
TINY = Sizes(
    backbone={"b32": "DiscoVLA-Tiny", "b16": "DiscoVLA-Tiny"},
    batch=2,
    frames=2,
    steps=1,
    warmup=1,
    eval_batch=2,
    eval_batches=1,
    caption_frames=2,
    caption_per_call=2,
    caption_tokens=4,
    image_size=56,
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def _model(backbone: str, frames: int, device: torch.device):
    from training.model import DiscoVLAConfig, build_model

    torch.manual_seed(0)
    return build_model(DiscoVLAConfig(backbone=backbone, pretrained=None, num_frames=frames), device=device)


def train_step(backbone: str, precision: str, sizes: Sizes, device: torch.device) -> dict:
    """Median seconds of one full training step and the peak GPU memory."""
    from benchmarks.model import make_inputs
    from training.losses import discovla_loss

    model = _model(backbone, sizes.frames, device).train()
    x = make_inputs(
        sizes.batch, sizes.frames, sizes.words, model.clip.vocab_size, model.preprocess_cfg["size"]
    )
    x = {k: v.to(device) for k, v in x.items()}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=6e-4, eps=1e-6, weight_decay=0.2)
    scale = model.logit_scale_value
    _reset_peak(device)
    times = []
    for i in range(sizes.warmup + sizes.steps):
        _sync(device)
        start = time.perf_counter()
        with _autocast(device, precision):
            out = model(frames=x["video"], text=x["text"], captions=x["captions"])
        out = {k: v.float() for k, v in out.items()}
        loss = discovla_loss(
            out["text_feats"], out["video_feats"], out["frame_feats"], out["caption_feats"], scale
        )["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        _sync(device)
        if i >= sizes.warmup:
            times.append(time.perf_counter() - start)
    if not torch.isfinite(loss):
        raise RuntimeError(f"the loss is not finite ({loss.item()})")
    return {"s_per_step": statistics.median(times), "peak_gb": _peak_gb(device)}


@torch.no_grad()
def eval_videos(backbone: str, precision: str, sizes: Sizes, device: torch.device) -> dict:
    """Videos/s of ``encode_video`` without gradients (what the evaluator runs per batch)."""
    model = _model(backbone, sizes.frames, device).eval()
    size = model.preprocess_cfg["size"]
    frames = torch.randn(sizes.eval_batch, sizes.frames, 3, *size, device=device)
    _reset_peak(device)
    times = []
    for i in range(1 + sizes.eval_batches):
        _sync(device)
        start = time.perf_counter()
        with _autocast(device, precision):
            _, video = model.encode_video(frames)
        video.float().cpu()
        if i:
            times.append(time.perf_counter() - start)
    return {"videos_per_s": sizes.eval_batch / statistics.median(times), "peak_gb": _peak_gb(device)}


def caption_frames(backend: str, sizes: Sizes, device: torch.device) -> dict:
    """Frames/s of the project's caption engine with the tiny random LLaVA-NeXT."""
    import numpy as np

    from captioning.config import EngineSpec, SamplingConfig
    from captioning.engines import make_engine
    from captioning.prompts import resolve_prompt
    from captioning.tiny_model import save_tiny_llava_next

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_tiny_llava_next(os.path.join(tmp, "tiny-llava"))
        spec = EngineSpec(
            backend=backend,
            model=str(model_dir),
            prompt_text=resolve_prompt("frame-caption-v1").text,
            sampling=SamplingConfig(max_tokens=sizes.caption_tokens),
            device=device.type,
            batch_size=sizes.caption_per_call,
        )
        engine = make_engine(spec)
        rng = np.random.default_rng(0)
        frames = rng.integers(
            0, 256, (sizes.caption_frames, sizes.image_size, sizes.image_size, 3), dtype=np.uint8
        )
        engine.caption(frames[: sizes.caption_per_call])  # warm-up
        start = time.perf_counter()
        results = []
        for i in range(0, len(frames), sizes.caption_per_call):
            results += engine.caption(frames[i : i + sizes.caption_per_call])
        seconds = time.perf_counter() - start
    if len(results) != len(frames):
        raise RuntimeError(f"{len(results)} captions for {len(frames)} frames")
    return {"frames_per_s": len(frames) / seconds, "tokens": sum(r.n_tokens for r in results)}


def measure(row: str, sizes: Sizes, device: torch.device) -> dict:
    kind, *rest = row.split("-")
    if kind == "train":
        return train_step(sizes.backbone[rest[0]], rest[1], sizes, device)
    if kind == "eval":
        return eval_videos(sizes.backbone[rest[0]], rest[1], sizes, device)
    return caption_frames(rest[0], sizes, device)


def run_row(row: str, args, timeout_s: float) -> dict:
    """``row`` in a fresh subprocess: its JSON result, or ``{"error": ...}`` (failure, hang, crash)."""
    python = args.vllm_python if row == "caption-vllm" and args.vllm_python else sys.executable
    cmd = [python, "-m", "benchmarks.gpu_check", "--one", row, "--device", args.device] + (
        ["--tiny"] if args.tiny else []
    )
    start = time.perf_counter()
    try:  # a session of its own: on timeout the row's helpers (vLLM's engine processes) go too
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
    except OSError as e:
        return {"error": f"could not start {python}: {e}"}
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"error": f"timed out after {timeout_s:.0f} s", "wall_s": time.perf_counter() - start}
    wall = time.perf_counter() - start
    marked = [ln[len(RESULT_MARK) :] for ln in stdout.splitlines() if ln.startswith(RESULT_MARK)]
    if proc.returncode == 0 and marked:  # libraries (vLLM) may log to stdout, before and after the result
        return {**json.loads(marked[-1]), "wall_s": wall}
    err = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    reason = err[-1] if err else f"exit status {proc.returncode}"
    return {"error": f"{reason} (exit {proc.returncode})", "wall_s": wall}


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def format_table(results: dict[str, dict]) -> str:
    lines = [
        "| row | s/step | videos/s | frames/s | peak GPU GB | wall s | status |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row, r in results.items():
        status = r.get("error", "ok")
        lines.append(
            f"| {row} | {_fmt(r.get('s_per_step'), '.3f')} | {_fmt(r.get('videos_per_s'), '.1f')} | "
            f"{_fmt(r.get('frames_per_s'), '.1f')} | {_fmt(r.get('peak_gb'), '.2f')} | "
            f"{_fmt(r.get('wall_s'), '.0f')} | {status} |"
        )
    return "\n".join(lines)


def describe_machine(device: torch.device) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    return (
        f"{now}; {gpu}; torch {torch.__version__}, CUDA {torch.version.cuda}, {os.cpu_count()} CPUs, "
        f"python {platform.python_version()}"
    )


def _rows(text: str) -> list[str]:
    rows = [r.strip() for r in text.split(",") if r.strip()]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown or not rows:
        raise argparse.ArgumentTypeError(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser("gpu_check", __doc__, progress=False)
    p.prog = "scripts/gpu_check.sh"
    p.add_argument("--rows", type=_rows, default=ROWS, help="comma-separated rows to run: " + ", ".join(ROWS))
    p.add_argument(
        "--budget-s",
        type=float,
        default=540.0,
        help="global time budget in seconds; rows that would start later are reported as skipped",
    )
    p.add_argument("--vllm-python", help="interpreter with vLLM for the caption-vllm row (default: this one)")
    p.add_argument(
        "--device",
        default="cuda",
        choices=["cuda", "cpu"],
        help="cuda (the check) or cpu (with --tiny: a check of the plumbing only)",
    )
    p.add_argument("--tiny", action="store_true", help="tiny models and workloads (tests)")
    p.add_argument("--one", choices=ROWS, help=argparse.SUPPRESS)  # internal: one row, print JSON
    return p


def run(args) -> int:
    sizes = TINY if args.tiny else FULL
    device = torch.device(args.device)
    if args.one:
        print(RESULT_MARK + json.dumps(measure(args.one, sizes, device)), flush=True)
        return 0
    rows = args.rows
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            f"gpu_check: no CUDA device is visible (torch {torch.__version__}, built for CUDA "
            f"{torch.version.cuda or 'none'}; CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}). "
            "Nothing to measure on this machine; run it on a machine with an NVIDIA GPU."
        )
        return 0
    print(f"gpu_check: {describe_machine(device)}; budget {args.budget_s:.0f} s", flush=True)
    deadline = time.monotonic() + args.budget_s
    results = {}
    for row in rows:
        left = deadline - time.monotonic()
        if left < MIN_START_S:
            results[row] = {"error": "skipped: time budget used up"}
        else:
            results[row] = run_row(row, args, min(ROW_CAP_S.get(row, DEFAULT_CAP_S), left))
        status = results[row].get("error", "ok")
        print(f"  {row}: {status}", file=sys.stderr, flush=True)
    print(format_table(results))
    return 1 if any("error" in r for r in results.values()) else 0


def main(argv=None) -> int:
    return cli.main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
