"""What a training run on object storage pays per checkpoint: publishing it, and downloading it on --resume.

    python -m benchmarks.checkpoint_publish [--backbone ViT-B-32] [--repeats 5]

Builds the DiscoVLA model of ``--backbone`` (random weights: the sizes are the real ones), writes its
checkpoint with ``training.checkpoint.save_state`` into a local folder (adapters, AdamW moments, state, RNG),
then times, against an S3 server on 127.0.0.1 (moto's server mode, the project's test server):

- ``save_state`` alone (what a run on local disk pays per checkpoint);
- ``RunDir.publish_checkpoint`` (the upload to ``checkpoint.tmp/`` and the copy over ``checkpoint/``:
  what ``output_dir=s3://...`` adds per checkpoint, on rank 0, while the other ranks wait);
- ``RunDir.checkpoint_to_resume`` (the download every rank makes on ``--resume``).

Medians of ``--repeats``. moto is a Python server sharing these cores, far slower than S3 or MinIO: the
figures bound the cost of the object path from above; they do not predict S3 over a network.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def _load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def _checkpointed_model(backbone: str):
    """(model, optimizer, scheduler) with AdamW moments for every adapter tensor (one step on zero grads)."""
    import torch

    from training.adapters import adapter_parameters
    from training.model import DiscoVLAConfig, build_model

    model = build_model(DiscoVLAConfig(backbone=backbone, pretrained=None), "cpu")
    params = list(adapter_parameters(model).values())
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    return model, optimizer, scheduler


def _median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="ViT-B-32", help="open_clip model (default: ViT-B-32)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats of each step (median shown)")
    args = p.parse_args(argv)

    from tests.s3_server import S3Server
    from training.checkpoint import CHECKPOINT_DIR, save_state
    from training.run_dir import RunDir

    model, optimizer, scheduler = _checkpointed_model(args.backbone)
    position = {"step": 1, "epoch": 0, "batch_in_epoch": 1, "best": None, "total_steps": 2}
    position.update(world_size=1, global_batch=1)
    with tempfile.TemporaryDirectory() as tmp, S3Server() as s3:
        s3.apply_env()
        s3.make_bucket("bench")
        local = Path(tmp) / "local"
        save = _median_s(lambda: save_state(local, model, optimizer, scheduler, position), args.repeats)
        files = [f for f in (local / CHECKPOINT_DIR).rglob("*") if f.is_file()]
        size_mb = sum(f.stat().st_size for f in files) / 1e6

        run = RunDir(s3.uri("bench", "run"))
        save_state(run.local, model, optimizer, scheduler, position)
        publish = _median_s(run.publish_checkpoint, args.repeats)
        reader = RunDir(s3.uri("bench", "run"), rank=1)
        download = _median_s(reader.checkpoint_to_resume, args.repeats)
        run.close()
        reader.close()

    print(f"checkpoint of {args.backbone}: {len(files)} files, {size_mb:.1f} MB (load average {_load()})")
    print(f"  save_state to local disk        {save:7.2f} s")
    print(f"  publish to S3 (moto, 127.0.0.1) {publish:7.2f} s   {size_mb / publish:6.1f} MB/s")
    print(f"  download on --resume            {download:7.2f} s   {size_mb / download:6.1f} MB/s")
    print(f"  publish / save_state            {publish / save:7.1f} x   (cpus: {os.cpu_count()})")


if __name__ == "__main__":
    main()
