"""Settings of a caption run, as frozen dataclasses checked on construction.

Two groups: what changes the captions (model, prompt, sampler, sampling, image resolution; recorded in
provenance and compared on resume) and what only changes how fast they are made (workers, shard size,
videos per call, decode timeout).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from shared.frame_codecs import DEFAULT_CODEC

DEFAULT_MODEL = "llava-hf/llava-v1.6-mistral-7b-hf"
BACKENDS = ("auto", "vllm", "transformers")
DTYPES = ("auto", "float32", "float16", "bfloat16")
VLLM_FEEDS = ("continuous", "per-call")


def is_engine_path(backend: str) -> bool:
    """``"package.module:Class"``: a ``CaptionEngine`` subclass outside this package (imported by name)."""
    module, sep, cls = backend.partition(":")
    return bool(sep and module and cls.isidentifier())


@dataclass(frozen=True)
class SamplingConfig:
    """Decoding settings; greedy by default so a re-run gives the same captions."""

    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    max_tokens: int = 60  # the trainer keeps 30 BPE tokens of a caption; 60 leaves room for a sentence
    seed: int = 0  # used when temperature > 0

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def provenance(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EngineSpec:
    """Everything an engine actor needs to build its engine (plain data: it crosses process boundaries)."""

    backend: str  # "vllm" | "transformers" | "module:Class" (resolved, never "auto")
    model: str  # Hugging Face id or local directory
    prompt_text: str  # the question; the model's chat template wraps it around one image
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    revision: str | None = None
    dtype: str = "auto"  # auto: bfloat16 on a GPU, float32 on a CPU
    device: str = "auto"  # auto: cuda if available
    max_model_len: int = 4096  # vLLM: one anyres frame (<= ~2,900 tokens) + prompt + answer
    batch_size: int = 16  # transformers: frames per generate() call
    threads: int = 0  # CPU threads for torch in this engine (0 = leave torch's default)
    engine_kwargs: dict = field(default_factory=dict)  # extra keyword arguments for vllm.LLM
    feed: str = "continuous"  # vLLM: "continuous" request queue across calls, or one generate() "per-call"

    def __post_init__(self):
        if self.backend not in ("vllm", "transformers") and not is_engine_path(self.backend):
            raise ValueError(
                f"backend must be 'vllm', 'transformers' or 'module:Class' here, got {self.backend!r}"
            )
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.feed not in VLLM_FEEDS:
            raise ValueError(f"feed must be one of {VLLM_FEEDS}, got {self.feed!r}")
        if self.batch_size < 1 or self.max_model_len < 64:
            raise ValueError(
                f"need batch_size >= 1 and max_model_len >= 64, got {self.batch_size}, {self.max_model_len}"
            )


@dataclass(frozen=True)
class CaptionConfig:
    """One caption run: ``captioning.pipeline.run_captioning(items, cfg, ...)``."""

    out: str  # caption-set directory (created); shards under out/data, stats under out/_stats
    model: str = DEFAULT_MODEL
    revision: str | None = None
    backend: str = "auto"  # auto: vllm with a GPU and vllm importable, else transformers
    prompt: str = "frame-caption-v1"  # a preset name (captioning.prompts.PRESETS) or custom text
    frames: int = 12  # F, must match the trainer's preset
    candidate_fps: float = 1.0
    image_size: int | None = 336  # frames resized so the short side has this many pixels (None: as decoded)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    dtype: str = "auto"
    max_model_len: int | None = None  # vLLM context; None: the model's own, capped at what one frame needs
    batch_size: int = 16  # transformers backend: frames per generate() call
    shard_size: int = 256  # videos per shard
    workers: int | None = None  # engine actors; default: one per GPU, else 1
    gpus_per_worker: float | None = None  # default 1 when GPUs are present, else 0
    cpus_per_worker: int = 1  # CPU threads (and Ray CPUs) per engine actor
    videos_per_call: int | None = None  # videos per engine call; None: 8 with vLLM (one batch of 8F), else 1
    decode_timeout_s: float = 60.0
    retry_failed: bool = False
    save_frames: str | None = None  # also write the sampled frames into this frame store (None: no frames)
    save_frames_size: int = 224  # the store's short side: the trainer's resolution
    save_frames_codec: str = DEFAULT_CODEC  # one of shared.frame_codecs.CODECS; jpeg is q95
    max_in_flight_per_worker: int = 3  # calls queued per engine actor: keeps it fed, bounds memory
    engine_kwargs: dict = field(default_factory=dict)
    vllm_feed: str = "continuous"  # vLLM: keep requests of several calls in one running batch, or "per-call"
    max_engine_deaths_per_video: int = 2  # lone calls of one video that may kill an engine before it fails
    max_engine_restarts: int = 50  # engine actors replaced in one run before it stops

    def __post_init__(self):
        if self.backend not in BACKENDS and not is_engine_path(self.backend):
            raise ValueError(f"backend must be one of {BACKENDS} or 'module:Class', got {self.backend!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        checks = {
            "frames": self.frames,
            "shard_size": self.shard_size,
            "cpus_per_worker": self.cpus_per_worker,
            "videos_per_call": self.videos_per_call or 1,
            "batch_size": self.batch_size,
            "max_in_flight_per_worker": self.max_in_flight_per_worker,
            "max_engine_deaths_per_video": self.max_engine_deaths_per_video,
        }
        for name, value in checks.items():
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.max_model_len is not None and self.max_model_len < 64:
            raise ValueError(
                f"max_model_len must be >= 64 tokens or None (from the model), got {self.max_model_len}"
            )
        if self.vllm_feed not in VLLM_FEEDS:
            raise ValueError(f"vllm_feed must be one of {VLLM_FEEDS}, got {self.vllm_feed!r}")
        if self.max_engine_restarts < 0:
            raise ValueError(f"max_engine_restarts must be >= 0, got {self.max_engine_restarts}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.image_size is not None and self.image_size < 8:
            raise ValueError(f"image_size must be >= 8 pixels (short side) or None, got {self.image_size}")
        if not self.decode_timeout_s > 0:
            raise ValueError(f"decode_timeout_s must be > 0, got {self.decode_timeout_s}")
        if not str(self.out):
            raise ValueError("out must name a caption-set directory")

    @property
    def out_path(self) -> Path:
        return Path(self.out)
