"""The DiscoVLA training recipe: one class with the lifecycle setup -> train -> save_checkpoint -> cleanup.

One optimiser step = one GLOBAL batch of ``cfg.batch_size`` samples (the contrastive batch of docs/method.md "Total loss and optimisation"):

- each of the W processes takes its slice of B/W samples (``EpochBatchSampler``) and encodes them;
- features of all ranks are gathered; the loss is computed on the global batch, the local slice keeping
  its graph (the reference's AllGather semantics: rank r back-propagates through its own samples only);
- gradient accumulation: when one process cannot hold B/W samples at once (``micro_batch_size``), the
  slice is encoded in chunks without a graph, the global loss is back-propagated to the cached
  features, then each chunk is encoded again with a graph and given those feature gradients
  (gradient caching: the exact gradient of the global-batch loss, no change to the negatives);
- the backward pass is scaled by ``W / reference_world_size``: DDP averages over W ranks, so the update
  is the full-batch gradient / reference_world_size, exactly as the 4-GPU reference (docs/method.md), on any W;
- clipping (1.0), AdamW (eps 1e-6, weight decay 0.2 on every trainable tensor), linear warm-up over 10 %
  of the steps from 0, then cosine to 0 (``get_cosine_schedule_with_warmup`` of the reference).

Run folder ``cfg.output_dir``::

    config.yaml, run_info.json       resolved config (sorted) + git hash and versions
    metrics.jsonl, tb/               one record per logged step / evaluation; TensorBoard events
    checkpoint/                      the latest resumable state (adapters, optimiser, scheduler, RNG, position)
    adapters/last/, adapters/best/   adapters at the end of training / at the best evaluation (best.json says
                                     which step and metric), loadable with training.adapters.load_adapters
    curves.png                       loss and R@1 over steps

``output_dir`` may be an object-store URI (``s3://...``): the recipe then writes into a local working
folder and publishes each finished file there (training.run_dir); a local path is written directly.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from training import reporting
from training.checkpoint import CHECKPOINT_DIR, CheckpointError, load_state, save_named_adapters, save_state
from training.config import TrainConfig, config_summary, save_config
from training.data import EpochBatchSampler, build_dataset, make_loader
from training.distributed import barrier, gather_dict, init_distributed, reference_loss_scale
from training.run_dir import RunDir

logger = logging.getLogger(__name__)

FEATURE_KEYS = ("text_feats", "video_feats", "frame_feats", "caption_feats")


def cosine_with_warmup(step: int, warmup: int, total: int) -> float:
    """lr multiplier: step/warmup during warm-up, then ½(1 + cos(π·progress)), progress = (step−warmup)/(total−warmup)."""
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


def _ddp_arguments() -> set[str]:
    import inspect

    return set(inspect.signature(DistributedDataParallel.__init__).parameters)


class TrainRecipe:
    """``TrainRecipe(cfg).setup(); .train(); .cleanup()``; ``resume=True`` continues ``output_dir/checkpoint``.

    ``checkpoint_dir`` resumes from another checkpoint folder (the one Ray Train hands back after a lost
    worker); ``on_checkpoint(path, record)`` is called on every rank after each checkpoint is complete
    (the Ray launcher reports it to Ray Train there).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        resume: bool = False,
        device: str | torch.device | None = None,
        train_items=None,
        eval_items=None,
        captions=None,
        checkpoint_dir: str | Path | None = None,
        on_checkpoint: Callable[[Path, dict], None] | None = None,
        progress: bool = True,
    ):
        self.cfg, self.progress = cfg, progress
        self.rank, self.world_size, self.device = init_distributed(device)
        self.run_dir = RunDir(cfg.output_dir, rank=self.rank)  # output_dir, or a working folder + remote
        self.out = self.run_dir.local
        self.checkpoint_dir = (
            Path(checkpoint_dir)
            if checkpoint_dir is not None
            else (self.run_dir.checkpoint_to_resume() if resume else None)
        )
        self.on_checkpoint = on_checkpoint
        self._items = {"train": train_items, "eval": eval_items, "captions": captions}
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.best: dict | None = None
        self.decode_failures: set[str] = set()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def show_progress(self) -> bool:
        return self.progress and self.is_main

    # ------------------------------------------------------------------ setup
    def setup(self) -> TrainRecipe:
        torch.manual_seed(self.cfg.seed)
        self.model = self.setup_model()
        self.train_data, self.eval_data = self.setup_data()
        self.steps_per_epoch = len(self.train_data) // self.cfg.batch_size
        self.total_steps = self.cfg.epochs * self.steps_per_epoch
        if self.cfg.max_steps is not None:
            self.total_steps = min(self.total_steps, self.cfg.max_steps)
        self.optimizer = self.setup_optimizer()
        self.scheduler = self.setup_lr_scheduler()
        micro = self.cfg.micro_batch_size
        if self.cfg.diagnose_every and micro and micro * self.world_size < self.cfg.batch_size:
            logger.warning("diagnose_every: no loss diagnostics with gradient caching (micro_batch_size)")
        if self.checkpoint_dir is not None:
            self.run_dir.fetch_history()  # remote runs: metrics.jsonl and tb/ to continue
            self.load_checkpoint(self.checkpoint_dir)
        if self.is_main:
            path = save_config(self.cfg, self.out, world_size=self.world_size, resumed_from_step=self.step)
            self.run_dir.publish("config.yaml", "run_info.json")
            logger.info("config (non-default fields; all in %s): %s", path, config_summary(self.cfg))
        return self

    def setup_model(self):
        from training.model import build_model

        cfg = self.cfg
        self.raw_model = build_model(cfg.model_config(), self.device)
        self.logit_scale = self.raw_model.logit_scale_value  # λ, frozen
        if self.world_size == 1:
            return self.raw_model
        ids = [self.device.index] if self.device.type == "cuda" else None
        # no buffer trains: skip the per-forward buffer broadcast (the argument was renamed in torch 2.14)
        no_sync = {
            "forward_sync_buffers"
            if "forward_sync_buffers" in _ddp_arguments()
            else "broadcast_buffers": False
        }
        return DistributedDataParallel(
            self.raw_model, device_ids=ids, find_unused_parameters=not cfg.needs_captions, **no_sync
        )  # without captions the text adapters get no gradient

    def setup_data(self):
        pre = self.raw_model.preprocess_cfg
        train = build_dataset(
            self.cfg,
            pre,
            train=True,
            items=self._items["train"],
            captions=self._items["captions"],
            normalize=False,
        )  # uint8 through the workers, normalised on the device
        # every rank encodes its share of the eval split (training.evaluate), rank 0 computes the metrics
        evaluation = build_dataset(self.cfg, pre, train=False, items=self._items["eval"])
        if len(train) < self.cfg.batch_size:
            raise ValueError(
                f"{len(train)} training items cannot fill one global batch of {self.cfg.batch_size}"
            )
        self.transform = train.transform
        return train, evaluation

    def setup_optimizer(self) -> torch.optim.Optimizer:
        from training.adapters import adapter_parameters

        params = list(adapter_parameters(self.raw_model).values())  # LoRA + fusion adapters, model order
        c = self.cfg
        return torch.optim.AdamW(
            params, lr=c.lr, betas=(c.adam_beta1, c.adam_beta2), eps=c.adam_eps, weight_decay=c.weight_decay
        )  # one group: decay on every trainable tensor

    def setup_lr_scheduler(self):
        warmup = int(self.cfg.warmup_ratio * self.total_steps)
        return torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: cosine_with_warmup(s, warmup, self.total_steps)
        )

    # ------------------------------------------------------------------ one step
    def _autocast(self):
        bf16 = self.cfg.precision == "bf16" or (self.cfg.precision == "auto" and self.device.type == "cuda")
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if bf16 else nullcontext()

    def _encode(self, batch: dict, model=None) -> dict[str, torch.Tensor]:
        """Local features: text [b, D], video [b, D], frames [b, F, D], pseudo captions [b, F, D] (fp32)."""
        d = self.device
        frames = self.transform.normalize(batch["frames"].to(d, non_blocking=True))  # [b, F, 3, S, S]
        captions = batch["caption_tokens"].to(d) if self.cfg.needs_captions else None
        with self._autocast():
            out = (model or self.model)(
                frames=frames,
                frame_mask=batch["frame_mask"].to(d),
                text=batch["text_tokens"].to(d),
                captions=captions,
            )
        return {k: v.float() for k, v in out.items()}

    def _gather(self, local: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Global features in rank order; the local slice keeps its autograd graph, the others are constants."""
        return gather_dict(local)  # training.distributed: backward routes only the local slice's gradient

    def _losses(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """L = L_vid + α·L_img + β·L_KD on the global batch (training.losses); ablations zero α or β."""
        from training.losses import discovla_loss

        c = self.cfg
        return discovla_loss(
            feats["text_feats"],
            feats["video_feats"],
            feats["frame_feats"],
            feats.get("caption_feats"),
            self.logit_scale,
            alpha=c.alpha if c.use_pimgalign else 0.0,
            beta=c.beta if c.use_aligndistill else 0.0,
        )

    def _loss_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """Forward of the local batch, gather, global-batch losses (with graph to the local slice)."""
        return self._losses(self._gather(self._encode(batch)))

    def _backward(self, batch: dict) -> dict[str, torch.Tensor]:
        """Gradients of the global loss × W/reference_world_size, in chunks of micro_batch_size if needed."""
        scale = reference_loss_scale(
            self.world_size, self.cfg.reference_world_size
        )  # full-batch gradient / W_ref
        n = len(batch["index"])
        micro = self.cfg.micro_batch_size or n
        if micro >= n:
            losses = self._loss_step(batch)
            self._diagnose(losses)  # at diagnose_every steps only: extra backward passes on this graph
            (losses["total"] * scale).backward()
            return losses
        chunks = [{k: v[i : i + micro] for k, v in batch.items()} for i in range(0, n, micro)]
        with torch.no_grad():  # pass 1: features only
            parts = [self._encode(chunk, model=self.raw_model) for chunk in chunks]
        cached = {k: torch.cat([p[k] for p in parts]).requires_grad_() for k in parts[0]}
        losses = self._losses(self._gather(cached))
        (losses["total"] * scale).backward()  # d(scaled L)/d(local features)
        start = 0
        for i, chunk in enumerate(chunks):  # pass 2: push the feature gradients into the parameters
            last = i == len(chunks) - 1
            sync = nullcontext() if last or self.world_size == 1 else self.model.no_sync()
            with sync:
                feats = self._encode(chunk)
                size = len(chunk["index"])
                torch.autograd.backward(
                    [feats[k] for k in feats], [cached[k].grad[start : start + size] for k in feats]
                )
            start += size
        return losses

    def _diagnose(self, losses: dict[str, torch.Tensor]) -> None:
        """Loss diagnostics of this step (training.diagnostics) when ``diagnose_every`` says so."""
        every = self.cfg.diagnose_every
        if every and (self.step == 0 or (self.step + 1) % every == 0):
            from training.diagnostics import loss_diagnostics

            self._diagnostics = loss_diagnostics(losses, self.optimizer.param_groups[0]["params"])

    def _train_step(self, batch: dict) -> dict[str, float]:
        self._diagnostics = None
        losses = self._backward(batch)
        params = self.optimizer.param_groups[0]["params"]
        clip = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        record = {
            **{k: float(v.detach()) for k, v in losses.items()},
            "grad_norm": float(grad_norm),
            "lr": lr,
        }
        return record if self._diagnostics is None else {**record, "diag": self._diagnostics}

    # ------------------------------------------------------------------ the loop
    def _loader(self, epoch: int, start_batch: int):
        sampler = EpochBatchSampler(
            len(self.train_data),
            self.cfg.batch_size,
            seed=self.cfg.seed,
            epoch=epoch,
            rank=self.rank,
            world_size=self.world_size,
            start_batch=start_batch,
        )
        return make_loader(
            self.train_data, sampler, num_workers=self.cfg.num_workers, pin_memory=self.device.type == "cuda"
        )

    def train(self, stop_after: int | None = None) -> dict | None:
        """Train to ``total_steps``; ``stop_after`` ends early without the final save (simulates a crash)."""
        self.model.train()
        log = reporting.MetricsLog(self.out, self.step, enabled=self.is_main)
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            disable=not self.show_progress,
            desc="train",
            unit="step",
        )
        t0, samples = time.perf_counter(), 0
        while self.step < self.total_steps:
            for batch in self._loader(self.epoch, self.batch_in_epoch):
                self._note_decode_failures(batch["decode_failed"])
                record = self._train_step(batch)
                self.step, self.batch_in_epoch, samples = (
                    self.step + 1,
                    self.batch_in_epoch + 1,
                    samples + self.cfg.batch_size,
                )
                record.update(
                    step=self.step, epoch=self.epoch, samples_per_s=samples / (time.perf_counter() - t0)
                )
                bar.update(1)
                bar.set_postfix(
                    loss=f"{record['total']:.4f}",
                    lr=f"{record['lr']:.2e}",
                    vids=f"{record['samples_per_s']:.1f}/s",
                )
                if self.step % self.cfg.log_every == 0 or self.step == 1 or "diag" in record:
                    log.write(record)
                self._periodic(log)
                if stop_after is not None and self.step >= stop_after:
                    bar.close()
                    return None
                if self.step >= self.total_steps:
                    break
            else:
                self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        bar.close()
        return self._finish(log)

    def _periodic(self, log) -> None:
        c = self.cfg
        if c.eval_every and self.step % c.eval_every == 0 and self.step < self.total_steps:
            self.evaluate(log)
        if c.save_every and self.step % c.save_every == 0 and self.step < self.total_steps:
            self.save_checkpoint()

    def _finish(self, log) -> dict | None:
        metrics = self.evaluate(log, teacher=True)
        log.close()
        self.save_checkpoint()
        if self.is_main:
            save_named_adapters(self.raw_model, self.out, "last", step=self.step, metrics=metrics)
            adapters = {name: self.run_dir.uri("adapters", name) for name in ("last", "best")}
            reporting.finish_report(self.out, metrics, self.best, self.decode_failures, adapters=adapters)
            # summary.json last: its presence says the run is complete
            self.run_dir.publish("adapters", "metrics.jsonl", "tb", "curves.png", "summary.json")
        return metrics

    def _note_decode_failures(self, failed: list[str]) -> None:
        new = set(failed) - self.decode_failures
        if new:
            self.decode_failures |= new
            logger.warning(
                "%d videos failed to decode so far (replaced by the next item): %s",
                len(self.decode_failures),
                sorted(new)[:5],
            )

    # ------------------------------------------------------------------ evaluation and checkpoints
    def _teacher_captions(self) -> dict:
        """The run's caption set for the evaluator's teacher report (used only if it covers the eval split)."""
        captions = getattr(self.train_data, "captions", None)
        if captions is None:
            return {}
        return {"captions": captions, "caption_tokenizer": self.train_data.caption_tokenizer}

    def evaluate(self, log=None, teacher: bool = False) -> dict:
        """Retrieval metrics on the eval split; keeps ``adapters/best`` on a new best t2v R@1.

        ``teacher`` (the final evaluation): also the teacher report (training.evaluate) when the run's
        caption set covers the eval split.

        Every rank encodes its share of the videos with ``num_workers`` DataLoader workers; the features are
        gathered and the metrics (identical to a one-process evaluation) are returned on every rank.
        """
        from training.evaluate import evaluate

        self.raw_model.eval()
        with torch.no_grad(), self._autocast():
            metrics = evaluate(
                self.raw_model,
                self.eval_data,
                batch_size=self.cfg.eval_batch_size,
                device=self.device,
                num_workers=self.cfg.num_workers,
                progress=self.show_progress,
                **(self._teacher_captions() if teacher else {}),
            )
        self.model.train()
        r1 = reporting.t2v_r1(metrics)
        if log is not None:
            log.write({"step": self.step, "epoch": self.epoch, "eval": metrics, "t2v_R1": r1})
        if self.best is None or r1 > self.best["t2v_R1"]:
            self.best = {"step": self.step, "t2v_R1": r1}  # the same on every rank: the metrics are
            if self.is_main:
                save_named_adapters(self.raw_model, self.out, "best", step=self.step, metrics=metrics)
                self.run_dir.publish("adapters")
        logger.info(
            "step %d: t2v R@1 %.2f (best %.2f at step %d)",
            self.step,
            r1,
            self.best["t2v_R1"],
            self.best["step"],
        )
        barrier()
        return metrics

    def _position(self) -> dict:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "best": self.best,
            "total_steps": self.total_steps,
            "world_size": self.world_size,
            "global_batch": self.cfg.batch_size,
        }

    def save_checkpoint(self) -> Path:
        """Adapters, optimiser, scheduler, position and RNG states into ``output_dir/checkpoint`` (atomic),
        then ``on_checkpoint`` (training.checkpoint)."""
        path = save_state(
            self.out, self.raw_model, self.optimizer, self.scheduler, self._position(), rank=self.rank
        )
        self.run_dir.publish("metrics.jsonl", "tb")  # the history first: a restart continues it
        self.run_dir.publish_checkpoint()
        if self.on_checkpoint is not None:
            self.on_checkpoint(
                path,
                {
                    "step": self.step,
                    "epoch": self.epoch,
                    "best_t2v_R1": self.best["t2v_R1"] if self.best else None,
                },
            )
        return path

    def load_checkpoint(self, path: str | Path | None = None) -> None:
        """Continue from the checkpoint folder ``path`` (default ``output_dir/checkpoint``)."""
        path = Path(path) if path is not None else self.out / CHECKPOINT_DIR
        position = load_state(path, self.raw_model, self.optimizer, self.scheduler, rank=self.rank)
        if position["global_batch"] != self.cfg.batch_size or position["total_steps"] != self.total_steps:
            raise CheckpointError(
                f"{path}: saved with batch_size={position['global_batch']}, "
                f"{position['total_steps']} steps; this run has {self.cfg.batch_size} and "
                f"{self.total_steps}. Resume with the same config (see {self.run_dir.uri('config.yaml')})"
            )
        self.step, self.epoch, self.batch_in_epoch = (
            position["step"],
            position["epoch"],
            position["batch_in_epoch"],
        )
        self.best = position["best"]
        if self.batch_in_epoch >= self.steps_per_epoch:
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        logger.info(
            "resumed from %s at step %d (epoch %d, batch %d)",
            path,
            self.step,
            self.epoch,
            self.batch_in_epoch,
        )

    def cleanup(self) -> None:
        barrier()
        self.run_dir.close()
