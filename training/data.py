"""Training and evaluation data: VideoItems (+ pseudo captions) -> tensors, epoch-seeded batches, a collate.

One sample (``RetrievalDataset[i]``)::

    frames          [F, 3, S, S]  uint8 (``normalize=False``, the trainer's choice) or CLIP-normalised float32
    frame_mask      [F]  int64, 1 = a real frame (all ones: the sampler always returns F frames)
    text_tokens     [words]  int64, open_clip BPE: SOT + words-2 tokens + EOT, zero-padded
    caption_tokens  [F, caption_words]  int64, pseudo caption f belongs to sampled frame f (only with captions)
    video_id, item_id, index (position in ``dataset.items``), decode_failed (video ids replaced, see below)

Pseudo captions are joined on ``video_id`` (a CaptionSet holds each video's F captions in frame_pos
order, checked against the trainer's frame sampler). Items whose video has no captions (absent or
failed in the caption set) and items whose video file is missing are **skipped and reported** at
construction (count + first ids, logged once; ``dataset.skipped``), never paired with wrong captions.

Decode failures during training (``on_decode_error``):
- ``"substitute"`` (training default): the next item (i+1, i+2, ... wrapping) takes the slot, so the
  global batch keeps its size on every rank; the failed video id travels in ``decode_failed`` and the
  trainer counts and logs it. More than 10 consecutive failures raise.
- ``"blank"`` (evaluation): zero frames with ``frame_mask`` all 0, so rows stay aligned with the
  texts and the item simply ranks last; listed in ``decode_failed``.
- ``"raise"``: ``VideoDecodeError`` propagates.

Frames from a frame store (``frame_store``, a ``shared.framestore.FrameStore``): a video the store holds
for the item's window is read from it instead of decoded (the same sampled frames, resized to the
store's short side when it was built); any other video is decoded at that same short side, so both
paths feed the augmentation the same frames up to the store codec's error. Items whose video file is
missing are kept when the store holds their frames.

Order and augmentation depend only on (seed, epoch, index): :class:`EpochBatchSampler` yields
``(index, clip_seed)`` keys, so resuming mid-epoch reproduces the same batches and the same RandAugment
draws whatever the number of workers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from shared.datasets import VideoItem, video_present
from shared.frames import VideoDecodeError, sample_frames
from training.augment import VideoTransform
from training.config import DECODE_POLICIES  # defined once, with the config

logger = logging.getLogger(__name__)

MAX_SUBSTITUTIONS = 10
_N_SHOWN = 5  # ids shown in reports


def clip_tokenizer(backbone: str, context_length: int):
    """open_clip's tokenizer for ``backbone`` truncating to ``context_length`` (SOT + ... + EOT)."""
    import open_clip

    from training.model import register_model_configs

    register_model_configs()  # our tiny test configs name their tokenizer too
    return open_clip.get_tokenizer(backbone, context_length=context_length)


def clip_seed(seed: int, epoch: int, index: int) -> int:
    """The RandAugment seed of one clip: a pure function of (run seed, epoch, item index)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class RetrievalDataset(Dataset):
    """Items of one split as tensors; see the module docstring for the sample layout and policies."""

    def __init__(
        self,
        items: Sequence[VideoItem],
        *,
        num_frames: int,
        transform: VideoTransform,
        tokenizer,
        captions=None,
        caption_tokenizer=None,
        seed: int = 0,
        on_decode_error: str = "substitute",
        normalize: bool = True,
        decode_short_side: int | None = None,
        decode_timeout_s: float | None = 60.0,
        skip_missing_files: bool = True,
        frame_store=None,
    ):
        if on_decode_error not in DECODE_POLICIES:
            raise ValueError(f"on_decode_error={on_decode_error!r}; expected one of {list(DECODE_POLICIES)}")
        if captions is not None and captions.num_frames != num_frames:
            raise ValueError(
                f"caption set {captions.source} has {captions.num_frames} captions per video, "
                f"the trainer samples num_frames={num_frames}; caption the videos with the same F"
            )
        self.num_frames, self.transform, self.tokenizer = num_frames, transform, tokenizer
        self.captions = captions
        self.caption_tokenizer = caption_tokenizer or tokenizer
        self.seed, self.on_decode_error, self.normalize = seed, on_decode_error, normalize
        if frame_store is not None:
            if frame_store.num_frames != num_frames:
                raise ValueError(
                    f"frame store {frame_store.root} holds {frame_store.num_frames} frames per video, "
                    f"the trainer samples num_frames={num_frames}"
                )
            if decode_short_side not in (None, frame_store.short_side):
                raise ValueError(
                    f"frame store {frame_store.root} holds frames at short side {frame_store.short_side}"
                    f" px but decode_short_side={decode_short_side}: the two paths would differ"
                )
            decode_short_side = frame_store.short_side  # decoded fallbacks match the stored frames
        self.frame_store = frame_store
        self.decode_short_side, self.decode_timeout_s = decode_short_side, decode_timeout_s
        self.items, self.skipped = self._select(list(items), skip_missing_files)
        if not self.items:
            raise ValueError(f"no usable items out of {len(items)} ({self.describe_skipped()})")

    # ------------------------------------------------------------------ selection and reporting
    def _select(self, items: list[VideoItem], skip_missing: bool):
        kept, skipped = [], {"missing_file": [], "no_captions": [], "failed_captions": []}
        exists: dict[Path, bool] = {}
        for item in items:
            path = Path(item.path)
            stored = self.frame_store is not None and item.video_id in self.frame_store
            if skip_missing and not stored and not exists.setdefault(path, video_present(item)):
                skipped["missing_file"].append(item.item_id or item.video_id)
            elif self.captions is not None and item.video_id not in self.captions.captions:
                reason = "failed_captions" if item.video_id in self.captions.failed else "no_captions"
                skipped[reason].append(item.item_id or item.video_id)
            else:
                kept.append(item)
        if any(skipped.values()):
            logger.warning("kept %d of %d items; skipped %s", len(kept), len(items), self._describe(skipped))
        return kept, skipped

    @staticmethod
    def _describe(skipped: dict[str, list[str]]) -> str:
        parts = [
            f"{len(ids)} {reason.replace('_', ' ')} (first: {ids[:_N_SHOWN]})"
            for reason, ids in skipped.items()
            if ids
        ]
        return "; ".join(parts) or "nothing"

    def describe_skipped(self) -> str:
        return self._describe(self.skipped)

    def __len__(self) -> int:
        return len(self.items)

    # ------------------------------------------------------------------ one sample
    def __getitem__(self, key) -> dict:
        index, seed = key if isinstance(key, tuple) else (int(key), clip_seed(self.seed, 0, int(key)))
        failed: list[str] = []
        for attempt in range(MAX_SUBSTITUTIONS + 1):
            current = (index + attempt) % len(self.items)
            try:
                frames, mask = self._frames(self.items[current], seed)
                return self._sample(current, frames, mask, failed)
            except VideoDecodeError as err:
                failed.append(self.items[current].video_id)
                if self.on_decode_error == "raise":
                    raise
                logger.warning("decode failed (%s): %s", self.on_decode_error, err)
                if self.on_decode_error == "blank":
                    size = self.transform.size
                    frames = torch.zeros((self.num_frames, 3, size, size), dtype=torch.uint8)
                    return self._sample(
                        current, frames, torch.zeros(self.num_frames, dtype=torch.long), failed
                    )
        raise VideoDecodeError(
            self.items[index].path,
            f"{MAX_SUBSTITUTIONS + 1} consecutive items from index {index} failed to decode: {failed}",
        )

    def _frames(self, item: VideoItem, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        stored = self._stored_frames(item)
        if stored is None:
            stored = sample_frames(
                item.path,
                self.num_frames,
                window=item.window,
                resize_short=self.decode_short_side,
                timeout_s=self.decode_timeout_s,
            ).frames
        frames = self.transform(stored, seed)  # [F, 3, S, S] uint8
        return frames, torch.ones(self.num_frames, dtype=torch.long)

    def _stored_frames(self, item: VideoItem):
        """[F, H, W, 3] uint8 from the frame store, or None (no store, not stored, other window, damaged)."""
        if self.frame_store is None:
            return None
        from shared.framestore import FrameStoreError

        try:
            return self.frame_store.frames(item.video_id, item.window)
        except FrameStoreError as err:
            logger.warning("frame store: %s; decoding the video instead", err)
            return None

    def _sample(self, index: int, frames: torch.Tensor, mask: torch.Tensor, failed: list[str]) -> dict:
        item = self.items[index]
        sample = {
            "frames": self.transform.normalize(frames) if self.normalize else frames,
            "frame_mask": mask,
            "text_tokens": self.tokenizer([item.text])[0],  # [words]
            "video_id": item.video_id,
            "item_id": item.item_id,
            "index": index,
            "decode_failed": failed,
        }
        if self.captions is not None:
            texts = self.captions.captions[item.video_id]  # F captions, position f = sampled frame f
            sample["caption_tokens"] = self.caption_tokenizer(list(texts))  # [F, caption_words]
        return sample


# ---------------------------------------------------------------------- batching
def collate(samples: list[dict]) -> dict:
    """Stack tensors; keep strings and ints as lists; flatten ``decode_failed``."""
    batch = {}
    for key, value in samples[0].items():
        if isinstance(value, torch.Tensor):
            batch[key] = torch.stack([s[key] for s in samples])
        elif key == "decode_failed":
            batch[key] = [vid for s in samples for vid in s[key]]
        else:
            batch[key] = [s[key] for s in samples]
    return batch


class EpochBatchSampler(Sampler):
    """This rank's share of each global batch of one epoch, as ``(index, clip_seed)`` keys.

    The epoch's order is ``permutation(n)`` drawn from (seed, epoch) alone. Global batch k is
    ``order[k·B:(k+1)·B]``; rank r takes the contiguous slice ``[r·B/W:(r+1)·B/W]``, so the ranks'
    slices concatenated in rank order are the global batch (the order of gathered features). The
    incomplete last batch is dropped. ``start_batch`` skips batches already trained (resume).
    """

    def __init__(
        self,
        n: int,
        global_batch: int,
        *,
        seed: int,
        epoch: int,
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
    ):
        if global_batch % world_size:
            raise ValueError(f"batch_size={global_batch} is not divisible by the world size {world_size}")
        if n < global_batch:
            raise ValueError(f"{n} items cannot fill one global batch of {global_batch}; lower batch_size")
        self.n, self.global_batch, self.seed, self.epoch = n, global_batch, seed, epoch
        self.rank, self.world_size, self.start_batch = rank, world_size, start_batch
        self.local_batch = global_batch // world_size

    @property
    def batches_per_epoch(self) -> int:
        return self.n // self.global_batch

    def __len__(self) -> int:
        return max(self.batches_per_epoch - self.start_batch, 0)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        lo = self.rank * self.local_batch
        for k in range(self.start_batch, self.batches_per_epoch):
            ids = order[k * self.global_batch + lo : k * self.global_batch + lo + self.local_batch]
            yield [(int(i), clip_seed(self.seed, self.epoch, int(i))) for i in ids]


def make_loader(
    dataset: RetrievalDataset,
    batch_sampler: Sampler | None = None,
    *,
    batch_size: int = 1,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader with :func:`collate`: ``batch_sampler`` for training, sequential ``batch_size`` otherwise."""
    kwargs = (
        {"batch_sampler": batch_sampler}
        if batch_sampler is not None
        else {"batch_size": batch_size, "shuffle": False}
    )
    return DataLoader(
        dataset,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        persistent_workers=False,
        **kwargs,
    )


# ---------------------------------------------------------------------- from a TrainConfig
def load_items(cfg, split: str) -> list[VideoItem]:
    """The items of ``split`` of ``cfg.dataset`` (shared.datasets), with the config's frames and words."""
    from shared.datasets import get_dataset

    adapter = get_dataset(
        cfg.dataset, split, cfg.annotations, cfg.video_root, frames=cfg.frames, words=cfg.words
    )
    return adapter.items()


def load_captions(cfg):
    """The CaptionSet at ``cfg.captions``, checked against the trainer's frame sampler and F."""
    from shared.frames import SamplerConfig
    from shared.shards import load_caption_set
    from training.config import ConfigError

    if cfg.captions is None:
        raise ConfigError(
            "captions=None but PImgAlign/AlignDistill need pseudo captions: pass --set captions=DIR "
            "(a caption set from pipelines.caption), or turn both off with "
            "--set use_pimgalign=false --set use_aligndistill=false"
        )
    return load_caption_set(
        cfg.captions, expect_sampler=SamplerConfig(num_frames=cfg.frames).provenance(), num_frames=cfg.frames
    )


def load_frame_store(cfg, preprocess_cfg: dict):
    """The FrameStore at ``cfg.frame_store`` (None when unset), refused unless it holds the trainer's frames:
    the same sampler and F, at ``decode_short_side`` (or, unset, the model's input size)."""
    if getattr(cfg, "frame_store", None) is None:
        return None
    return open_frame_store(cfg.frame_store, cfg.frames, preprocess_cfg, cfg.decode_short_side)


def open_frame_store(path, num_frames: int, preprocess_cfg: dict, decode_short_side: int | None = None):
    """A FrameStore checked against the frames this model would decode: sampler with ``num_frames``, short
    side ``decode_short_side`` or, when None, the model's input size (``preprocess_cfg["size"]``)."""
    from shared.frames import SamplerConfig
    from shared.framestore import FrameStore

    size = preprocess_cfg["size"]
    short_side = decode_short_side or (size if isinstance(size, int) else size[0])
    return FrameStore(
        path, expect_sampler=SamplerConfig(num_frames=num_frames).provenance(), short_side=short_side
    )


def build_dataset(
    cfg,
    preprocess_cfg: dict,
    *,
    train: bool,
    items: Sequence[VideoItem] | None = None,
    captions=None,
    normalize: bool = True,
    frame_store=None,
) -> RetrievalDataset:
    """The train (RandAugment, pseudo captions, substitute) or eval (plain, blank) dataset of ``cfg``."""
    if items is None:
        items = load_items(cfg, cfg.train_split if train else cfg.eval_split)
    if train and cfg.needs_captions and captions is None:
        captions = load_captions(cfg)
    transform = VideoTransform.from_model(preprocess_cfg, cfg.randaugment if train else None)
    if frame_store is None:
        frame_store = load_frame_store(cfg, preprocess_cfg)
    return RetrievalDataset(
        items,
        num_frames=cfg.frames,
        transform=transform,
        tokenizer=clip_tokenizer(cfg.backbone, cfg.words),
        captions=captions if train else None,
        caption_tokenizer=clip_tokenizer(cfg.backbone, cfg.caption_words),
        seed=cfg.seed,
        on_decode_error=cfg.on_decode_error if train else "blank",
        normalize=normalize,
        decode_short_side=cfg.decode_short_side,
        decode_timeout_s=cfg.decode_timeout_s,
        frame_store=frame_store,
    )
