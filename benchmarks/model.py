"""Seconds and peak memory of one DiscoVLA training step on the CPU, alone or next to the authors' code.

    python -m benchmarks.model [--backbone ViT-B-32] [--batch 8] [--frames 12] [--words 32]
                               [--threads 2] [--steps 3] [--cases a,b]
    python -m benchmarks.model --reference ~/src/DsicoVLA [--rounds 2] [--steps 2]

Random weights, 224 px, one fresh subprocess per run so that each peak RSS (``ru_maxrss``) belongs to that
run alone. One step = forward of the B videos (B·F frames), the B query captions and the B·F pseudo
captions, the three losses of the method (``training.losses.discovla_loss``), backward, gradient clipping
at 1.0, AdamW step. Cases:

- (a) frozen CLIP + LoRA in every block, image-level attention only (h_v = h_l = 0), same inputs and losses;
- (b) full DiscoVLA: IVFusion in the top 4 vision / 2 text blocks (the defaults);
- (v) optional: (a) reduced to videos + query captions and L_vid alone (CLIP4Clip-like step).

Prints per case the median step seconds (after one warm-up step) and peak RSS, then (b)/(a).
``--profile 25 --cases b`` prints instead torch.profiler's 25 most expensive operators of one step of (b).

``--reference DIR`` takes a checkout of the authors' code (github.com/LunarShen/DsicoVLA; it needs
``einops``, e.g. ``pip install -e '.[reference]'``) and alternates, ``--rounds`` times, a run of (b) with a
run of the authors' training step (their ``VTRModel`` forward with its losses, backward, gradient clipping,
their AdamW) on the same inputs: the same random CLIP weights (one checkpoint written for both, λ = 100),
frames, query captions with their masks and pseudo captions with EOT at position 20. It prints both
first-step losses (equal up to float rounding: the same model at initialisation), each run, and the ratios
ours/theirs of the median step time and of the peak RSS. The authors wrap ``backward`` in
``torch.autograd.detect_anomaly()``, a debugging aid that is left out unless ``--reference-anomaly``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from pipelines import cli
from shared.errors import DiscoVLAError

CASES = {
    "a": "LoRA only, image-level (h_v = h_l = 0)",
    "b": "DiscoVLA: IVFusion h_v=4, h_l=2",
    "v": "LoRA, L_vid only",
}
LAMBDA = 100.0  # exp(logit_scale) of OpenAI CLIP
CAPTION_EOT = 20  # pseudo captions: EOT at position 20, padding after
CLIP_GRAD = 1.0
REFERENCE_FILE = "tvr/models/modeling.py"  # what makes a directory a checkout of the authors' code


def make_inputs(batch: int, frames: int, words: int, vocab: int, size) -> dict[str, torch.Tensor]:
    """The step's inputs, the same in every process: frames, query tokens, pseudo-caption tokens, masks."""
    g = torch.Generator().manual_seed(1)
    video = torch.randn(batch, frames, 3, *size, generator=g)
    text = torch.randint(1, vocab - 2, (batch, words), generator=g)
    text[:, -1] = vocab - 1  # EOT (the highest id) last: every query token is real
    captions = torch.randint(1, vocab - 2, (batch, frames, words), generator=g)
    eot = min(CAPTION_EOT, words - 1)
    captions[..., eot] = vocab - 1
    captions[..., eot + 1 :] = 0
    positions = torch.arange(words)
    return {
        "video": video,
        "video_mask": torch.ones(batch, frames, dtype=torch.long),
        "text": text,
        "text_mask": torch.ones(batch, words, dtype=torch.long),
        "captions": captions,
        "caption_mask": (positions <= eot).long().expand(batch, frames, words).contiguous(),
    }


def write_random_checkpoint(backbone: str, path: Path) -> Path:
    """A random open_clip CLIP (seed 0, QuickGELU, λ = 100) saved as a plain state dict both codes load."""
    import open_clip

    from training.model import register_model_configs

    register_model_configs()
    torch.manual_seed(0)
    clip = open_clip.create_model(backbone, pretrained=None, force_quick_gelu=True)
    with torch.no_grad():
        clip.logit_scale.fill_(math.log(LAMBDA))
    torch.save(clip.state_dict(), path)
    return path


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # ru_maxrss is KiB on Linux


def _timed_steps(step, n: int) -> dict:
    """Run one warm-up step and ``n`` timed ones: wall seconds, CPU seconds of this process, first loss.

    CPU seconds (user + system of all threads) are less sensitive than wall time to other processes
    sharing the machine; with T threads they are about T x wall time on an idle machine.
    """
    wall, cpu, first_loss = [], [], None
    for _ in range(n + 1):
        start, start_cpu = time.perf_counter(), time.process_time()
        loss = step()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        first_loss = loss if first_loss is None else first_loss
    return {
        "seconds": statistics.median(wall[1:]),
        "cpu_seconds": statistics.median(cpu[1:]),
        "all_seconds": wall,
        "first_loss": first_loss,
        "peak_rss_gb": _peak_rss_gb(),
    }


def run_case(case: str, args) -> dict:
    """One of our cases in this process; ``args.weights`` (a checkpoint) or random weights."""
    from training.losses import discovla_loss
    from training.model import DiscoVLAConfig, build_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fusion = case == "b"
    cfg = DiscoVLAConfig(
        backbone=args.backbone,
        pretrained=args.weights,
        num_frames=args.frames,
        max_words=args.words,
        h_v=4 if fusion else 0,
        h_l=2 if fusion else 0,
        lean_mlp=args.lean_mlp,
        mlp_recompute=args.mlp_recompute,
    )
    model = build_model(cfg).train()
    x = make_inputs(args.batch, args.frames, args.words, model.clip.vocab_size, model.preprocess_cfg["size"])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=6e-4, eps=1e-6, weight_decay=0.2)
    scale = model.logit_scale_value if args.weights else LAMBDA

    def step() -> float:
        z, v = model.encode_video(x["video"])
        t = model.encode_text(x["text"])
        if case == "v":  # videos + query captions, L_vid only
            loss = discovla_loss(t, v, None, None, scale, alpha=0.0, beta=0.0)["total"]
        else:  # L = L_vid + 0.3·L_img + 1.0·L_KD
            loss = discovla_loss(t, v, z, model.encode_pseudo_captions(x["captions"]), scale)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP_GRAD)
        opt.step()
        return loss.item()

    result = {"case": case, **_timed_steps(step, args.steps), "trainable": model.trainable_parameters()}
    if getattr(args, "profile", 0):  # one more step under torch.profiler: where the time goes
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile), flush=True)
    return result


def check_reference_dir(path: str | Path) -> Path:
    """``path`` must be a checkout of the authors' code whose imports are available."""
    root = Path(path).expanduser().resolve()
    if not (root / REFERENCE_FILE).is_file():
        raise DiscoVLAError(
            f"{root}: not a checkout of the authors' code (no {REFERENCE_FILE}); clone "
            "github.com/LunarShen/DsicoVLA and pass its directory"
        )
    try:
        import einops  # noqa: F401  (the authors' attention blocks use einops.rearrange)
    except ImportError as e:
        raise DiscoVLAError(
            f"{root}: the authors' code imports einops, which is not installed; "
            "pip install einops (or pip install -e '.[reference]')"
        ) from e
    return root


def run_reference(args) -> dict:
    """The authors' training step (main.py's train_epoch body) on :func:`make_inputs` in this process."""
    from types import SimpleNamespace

    import torch.distributed as dist

    root = check_reference_dir(args.reference)
    sys.path.insert(0, str(root))
    from tvr.models.modeling import VTRModel
    from tvr.models.module_clip import _PT_NAME
    from tvr.models.optimization_adamw import AdamW

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    name = args.backbone.replace("ViT-B-", "ViT-B/")
    weights = Path(args.weights)
    if weights.name != _PT_NAME[name]:
        raise DiscoVLAError(f"{weights}: the authors' loader expects the file name {_PT_NAME[name]}")
    with tempfile.TemporaryDirectory() as tmp:  # their forward all-gathers and calls a barrier: world of 1
        dist.init_process_group("gloo", init_method=f"file://{tmp}/pg", rank=0, world_size=1)
    config = SimpleNamespace(
        base_encoder=name,
        pretrained_path=str(weights.parent),
        lora_adapter_dim=8,
        alpha=0.3,
        beta=1.0,
        H_V=4,
        H_L=2,
        world_size=1,
        local_rank=0,
    )
    model = VTRModel(config).train()
    state = torch.load(weights, map_location="cpu", weights_only=True)
    missing = [k for k in model.clip.state_dict() if k not in state and "TVPt" not in k]
    if missing:  # their load_state_dict is strict=False: make sure the frozen model really is ours
        raise DiscoVLAError(f"{weights}: the authors' CLIP has weights the checkpoint lacks: {missing[:5]}")
    del state
    for pname, p in model.named_parameters():  # main.py prep_optimizer: only "TVPt" tensors train
        p.requires_grad_("TVPt" in pname)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = AdamW([{"params": params, "lr": 6e-4}], weight_decay=0.2)
    x = make_inputs(
        args.batch, args.frames, args.words, model.clip.vocab_size, (model.clip.visual.input_resolution,) * 2
    )

    def step() -> float:
        loss = model(
            x["text"], x["text_mask"], x["captions"], x["caption_mask"], x["video"], x["video_mask"]
        )[0]
        opt.zero_grad()
        if args.reference_anomaly:
            with torch.autograd.detect_anomaly():
                loss.backward()
        else:
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_GRAD)
        opt.step()
        return loss.item()

    result = _timed_steps(step, args.steps)
    dist.destroy_process_group()
    return {"case": "reference", **result, "trainable": sum(p.numel() for p in params)}


def _subprocess(args, extra: list[str]) -> dict:
    opts = {
        "backbone": args.backbone,
        "batch": args.batch,
        "frames": args.frames,
        "words": args.words,
        "threads": args.threads,
        "steps": args.steps,
    }
    extra = [*extra, "--lean-mlp" if args.lean_mlp else "--no-lean-mlp"]
    extra += ["--mlp-recompute"] if args.mlp_recompute else []
    cmd = [sys.executable, "-m", "benchmarks.model", *(f"--{k}={v}" for k, v in opts.items()), *extra]
    env = dict(os.environ)
    if args.malloc_mmap_threshold_mb is not None:
        env["MALLOC_MMAP_THRESHOLD_"] = str(int(args.malloc_mmap_threshold_mb * 2**20))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise DiscoVLAError(f"benchmark run {' '.join(extra)} failed (exit {proc.returncode}):\n{tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _line(label: str, r: dict) -> str:
    return (
        f"{label:<44} {r['seconds']:7.2f} s/step (CPU {r['cpu_seconds']:6.1f} s)  peak RSS {r['peak_rss_gb']:5.2f} GB  loss(step 0) "
        f"{r['first_loss']:.5f}  steps {[round(s, 1) for s in r['all_seconds']]}"
    )


def compare_with_reference(args) -> dict:
    """Alternate runs of (b) and of the authors' step; print each run and the ratios ours/theirs."""
    check_reference_dir(args.reference)
    runs: dict[str, list[dict]] = {"ours": [], "reference": []}
    with tempfile.TemporaryDirectory() as tmp:
        name = args.backbone.replace("ViT-B-", "ViT-B/").replace("/", "-") + ".pt"
        weights = write_random_checkpoint(args.backbone, Path(tmp) / name)
        sides = {
            "ours": ["--one=b", f"--weights={weights}"],
            "reference": [f"--one-reference={args.reference}", f"--weights={weights}"]
            + (["--reference-anomaly"] if args.reference_anomaly else []),
        }
        for i in range(args.rounds):
            order = ("ours", "reference") if i % 2 == 0 else ("reference", "ours")
            for side in order:
                r = _subprocess(args, sides[side])
                runs[side].append(r)
                print(
                    _line(f"round {i + 1} {'ours (b)' if side == 'ours' else 'authors (DsicoVLA)'}", r),
                    flush=True,
                )
    keys = ("seconds", "cpu_seconds", "peak_rss_gb")
    med = {side: {k: statistics.median(r[k] for r in rs) for k in keys} for side, rs in runs.items()}
    ratio = {k: med["ours"][k] / med["reference"][k] for k in keys}
    o, a = med["ours"], med["reference"]
    print(
        f"median ours {o['seconds']:.2f} s/step {o['peak_rss_gb']:.2f} GB, authors {a['seconds']:.2f} s/step "
        f"{a['peak_rss_gb']:.2f} GB -> ours/authors: time {ratio['seconds']:.2f}x (CPU time "
        f"{ratio['cpu_seconds']:.2f}x)  memory {ratio['peak_rss_gb']:.2f}x"
    )
    return {"runs": runs, "ratio": ratio}


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser("model", __doc__, progress=False)
    p.prog = "python -m benchmarks.model"
    p.add_argument(
        "--backbone", default="ViT-B-32", help="open_clip model name (ViT-B-32 or ViT-B-16 with --reference)"
    )
    p.add_argument("--batch", type=int, default=8, help="videos per step (B)")
    p.add_argument("--frames", type=int, default=12, help="frames per video = pseudo captions per video (F)")
    p.add_argument("--words", type=int, default=32, help="tokens per caption")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads in every run")
    p.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    p.add_argument("--cases", default="a,b", help="comma-separated subset of " + ",".join(CASES))
    p.add_argument(
        "--lean-mlp",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="our frozen MLPs keep only their input and act'(h) for backward (DiscoVLAConfig.lean_mlp)",
    )
    p.add_argument(
        "--mlp-recompute",
        action="store_true",
        help="with --lean-mlp: keep only the input and recompute c_fc in backward (DiscoVLAConfig.mlp_recompute)",
    )
    p.add_argument(
        "--reference", metavar="DIR", help="a checkout of the authors' code: compare with it instead"
    )
    p.add_argument("--rounds", type=int, default=2, help="with --reference: alternating pairs of runs")
    p.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="ROWS",
        help="run the last of --cases in this process and print torch.profiler's top ROWS operators of one step",
    )
    p.add_argument(
        "--reference-anomaly",
        action="store_true",
        help="with --reference: keep the authors' torch.autograd.detect_anomaly() around backward",
    )
    p.add_argument(
        "--malloc-mmap-threshold-mb",
        type=float,
        default=None,
        help="run with glibc's MALLOC_MMAP_THRESHOLD_ fixed at this size (default: glibc's dynamic "
        "threshold); 16 returns freed activations to the OS instead of keeping a fragmented heap",
    )
    p.add_argument("--weights", help=argparse.SUPPRESS)  # internal: checkpoint for --one / --one-reference
    p.add_argument("--one", choices=sorted(CASES), help=argparse.SUPPRESS)  # internal: one case, print JSON
    p.add_argument("--one-reference", help=argparse.SUPPRESS)  # internal: the authors' step, print JSON
    return p


def run(args) -> int:
    if args.one:
        print(json.dumps(run_case(args.one, args)))
        return 0
    if args.profile:
        print(
            _line(f"({args.cases.split(',')[-1]}) in this process", run_case(args.cases.split(",")[-1], args))
        )
        return 0
    if args.one_reference:
        args.reference = args.one_reference
        print(json.dumps(run_reference(args)))
        return 0
    malloc = (
        f"MALLOC_MMAP_THRESHOLD_ {args.malloc_mmap_threshold_mb} MiB"
        if args.malloc_mmap_threshold_mb
        else "glibc malloc defaults"
    )
    print(
        f"{args.backbone}, batch {args.batch} x {args.frames} frames, {args.words} words, {args.threads} threads, "
        f"fp32, lean_mlp {args.lean_mlp}, mlp_recompute {args.mlp_recompute}, torch {torch.__version__}, {malloc}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}",
        flush=True,
    )
    if args.reference:
        compare_with_reference(args)
        return 0
    results = {}
    for case in args.cases.split(","):
        r = results[case] = _subprocess(args, [f"--one={case}"])
        print(_line(f"({case}) {CASES[case]}", r) + f"  trainable {r['trainable']:,}", flush=True)
    if "a" in results and "b" in results:
        print(
            f"(b)/(a) time {results['b']['seconds'] / results['a']['seconds']:.2f}  "
            f"memory {results['b']['peak_rss_gb'] / results['a']['peak_rss_gb']:.2f}"
        )
    return 0


def main(argv=None) -> int:
    return cli.main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
