"""Seconds and peak memory of one DiscoVLA training step on the CPU (issue 5, section 3).

    python -m benchmarks.model [--backbone ViT-B-32] [--batch 8] [--frames 12] [--words 32]
                               [--threads 2] [--steps 3] [--cases a,b]

Random weights (``pretrained=None``), 224 px, one fresh subprocess per case so that each peak RSS
(``ru_maxrss``) belongs to that case alone. One step = forward of the B videos (B·F frames), the B query
captions and the B·F pseudo captions, the three losses of METHOD.md (``training.losses.discovla_loss``),
backward, AdamW step:

- (a) frozen CLIP + LoRA in every block, image-level attention only (h_v = h_l = 0), same inputs and losses;
- (b) full DiscoVLA: IVFusion in the top 4 vision / 2 text blocks (the defaults);
- (v) optional: (a) reduced to videos + query captions and L_vid alone (CLIP4Clip-like step).

Prints per case the median step seconds (after one warm-up step) and peak RSS, then (b)/(a). Targets:
(b) <= 40 s and <= 5.9 GB, (b)/(a) <= 1.5 (the authors' code: ~50 s, 7.4 GB; ~43 s without IVFusion).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

CASES = {"a": "LoRA only, image-level (h_v = h_l = 0)", "b": "DiscoVLA: IVFusion h_v=4, h_l=2", "v": "LoRA, L_vid only"}
LAMBDA = 100.0  # exp(logit_scale) of OpenAI CLIP


def run_case(case: str, args) -> dict:
    from training.losses import discovla_loss
    from training.model import DiscoVLAConfig, build_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fusion = case == "b"
    cfg = DiscoVLAConfig(backbone=args.backbone, pretrained=None, num_frames=args.frames, max_words=args.words,
                         h_v=4 if fusion else 0, h_l=2 if fusion else 0)
    model = build_model(cfg).train()
    size = model.preprocess_cfg["size"]
    frames = torch.randn(args.batch, args.frames, 3, *size)
    vocab = model.clip.vocab_size
    text = torch.randint(1, vocab - 2, (args.batch, args.words))
    text[:, -1] = vocab - 1  # EOT
    captions = torch.randint(1, vocab - 2, (args.batch, args.frames, args.words))
    captions[..., 20] = vocab - 1  # EOT at 20, padding after
    captions[..., 21:] = 0
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=6e-4, weight_decay=0.2)
    times = []
    for _ in range(args.steps + 1):
        start = time.perf_counter()
        z, v = model.encode_video(frames)
        t = model.encode_text(text)
        if case == "v":  # videos + query captions, L_vid only
            loss = discovla_loss(t, v, None, None, LAMBDA, alpha=0.0, beta=0.0)["total"]
        else:  # L = L_vid + 0.3·L_img + 1.0·L_KD
            loss = discovla_loss(t, v, z, model.encode_pseudo_captions(captions), LAMBDA)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # ru_maxrss is KiB on Linux
    return {"case": case, "seconds": statistics.median(times[1:]), "all_seconds": times, "peak_rss_gb": peak_gb,
            "trainable": model.trainable_parameters(), "loss": loss.item()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="ViT-B-32")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--words", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    p.add_argument("--cases", default="a,b", help="comma-separated subset of " + ",".join(CASES))
    p.add_argument("--malloc-mmap-threshold-mb", type=float, default=None,
                   help="run the cases with glibc's MALLOC_MMAP_THRESHOLD_ fixed at this size (default: glibc's "
                   "dynamic threshold); 16 returns freed activations to the OS instead of keeping a fragmented heap")
    p.add_argument("--one", choices=sorted(CASES), help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(run_case(args.one, args)))
        return
    malloc = f"MALLOC_MMAP_THRESHOLD_ {args.malloc_mmap_threshold_mb} MiB" if args.malloc_mmap_threshold_mb else "glibc malloc defaults"
    print(f"{args.backbone}, batch {args.batch} x {args.frames} frames, {args.words} words, {args.threads} threads, "
          f"torch {torch.__version__}, {malloc}")
    results = {}
    for case in args.cases.split(","):
        opts = {"backbone": args.backbone, "batch": args.batch, "frames": args.frames, "words": args.words,
                "threads": args.threads, "steps": args.steps, "one": case}
        cmd = [sys.executable, "-m", "benchmarks.model", *(f"--{k}={v}" for k, v in opts.items())]
        env = dict(os.environ)
        if args.malloc_mmap_threshold_mb is not None:
            env["MALLOC_MMAP_THRESHOLD_"] = str(int(args.malloc_mmap_threshold_mb * 2**20))
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.strip().splitlines()[-1]
        r = results[case] = json.loads(out)
        print(f"({case}) {CASES[case]:<40} {r['seconds']:7.2f} s/step  peak RSS {r['peak_rss_gb']:5.2f} GB  "
              f"trainable {r['trainable']:,}  steps {[round(s, 1) for s in r['all_seconds']]}")
    if "a" in results and "b" in results:
        print(f"(b)/(a) time {results['b']['seconds'] / results['a']['seconds']:.2f}  "
              f"memory {results['b']['peak_rss_gb'] / results['a']['peak_rss_gb']:.2f}")


if __name__ == "__main__":
    main()
