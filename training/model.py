"""DiscoVLA on a frozen open_clip CLIP: the factory :func:`build_model` and the :class:`DiscoVLA` encoders.

``build_model`` creates an open_clip ``CLIP`` (random, an open_clip pretrained tag such as ``"openai"``, or a
local checkpoint file), freezes all of it (logit scale included), then replaces the ``attn`` module of
every block of both towers (the way PEFT injects): :class:`~training.lora.LoRAAttention` in the lower
blocks, :class:`~training.ivfusion.IVFusionAttention` in the top ``h_v`` vision / ``h_l`` text blocks.
Only the LoRA matrices and fusion adapters train: 561,200 parameters for the ViT-B defaults (docs/method.md "Backbone and what trains").
"""

from __future__ import annotations

import functools
import logging
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from torch import nn

from training.ivfusion import FrameGroup, IVFusionAttention, frame_group
from training.lora import FrozenMLP, LoRAAttention
from training.parameters import adapter_parameters, parameter_groups

__all__ = ["DiscoVLAConfig", "DiscoVLA", "build_model", "register_model_configs", "MODEL_CONFIG_DIR"]

logger = logging.getLogger(__name__)

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"


@functools.cache
def register_model_configs() -> tuple[str, ...]:
    """Add ``training/model_configs/*.json`` to open_clip's registry (once); returns their names."""
    open_clip.add_model_config(MODEL_CONFIG_DIR)
    return tuple(sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.json")))


@dataclass(frozen=True)
class DiscoVLAConfig:
    """What defines a DiscoVLA model. Defaults: docs/method.md (MSRVTT, ViT-B/32, OpenAI weights)."""

    backbone: str = "ViT-B-32"  # an open_clip model name (ViT-B-32, ViT-B-16, DiscoVLA-Tiny, ...)
    pretrained: str | None = "openai"  # open_clip tag, a local checkpoint file, or None for random weights
    num_frames: int = 12  # F: frames per video = pseudo captions per sample (any F works at call time)
    max_words: int = 32  # tokenizer context length of captions (<= the backbone's 77 positions)
    lora_rank: int = 8  # r of LoRA and of the fusion adapters
    h_v: int = 4  # IVFusion in the top h_v vision blocks
    h_l: int = 2  # IVFusion in the top h_l text blocks
    quick_gelu: bool = True  # force QuickGELU (OpenAI CLIP); False keeps the open_clip config's activation
    lean_mlp: bool = (
        True  # frozen MLPs keep only their input and act'(h) for backward (same numbers, less memory)
    )
    mlp_recompute: bool = (
        False  # with lean_mlp: keep only the input, recompute c_fc in backward (least memory, slower)
    )

    def __post_init__(self):
        for name in ("num_frames", "max_words", "lora_rank"):
            if getattr(self, name) < 1:
                raise ValueError(f"DiscoVLAConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("h_v", "h_l"):
            if getattr(self, name) < 0:
                raise ValueError(f"DiscoVLAConfig.{name} must be >= 0, got {getattr(self, name)}")

    def hyper_parameters(self) -> dict:
        """The fields that decide the adapters' tensors and how they were trained."""
        return {"lora_rank": self.lora_rank, "h_v": self.h_v, "h_l": self.h_l, "num_frames": self.num_frames}


def _is_torchscript_archive(path: Path) -> bool:
    """OpenAI's own ViT-B-32.pt / ViT-B-16.pt are TorchScript archives, not state dicts."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(name.endswith("constants.pkl") for name in zf.namelist())


def _offline_hint(cfg: DiscoVLAConfig) -> str:
    url = (open_clip.get_pretrained_cfg(cfg.backbone, cfg.pretrained) or {}).get("url", "")
    return (
        "To run offline, copy the checkpoint to this machine and pass its path: "
        f"DiscoVLAConfig(backbone={cfg.backbone!r}, pretrained='/path/to/{cfg.backbone}.pt') "
        "(.pt/.pth/.bin state dicts, .safetensors, or OpenAI's TorchScript file"
        + (f" from {url}" if url else "")
        + "); or fill the Hugging Face cache once online and set HF_HUB_OFFLINE=1."
    )


def _create_clip(cfg: DiscoVLAConfig, device: str | torch.device) -> CLIP:
    """open_clip CLIP with the weights ``cfg.pretrained`` names; clear errors when they are unavailable."""
    names = register_model_configs()
    if cfg.backbone not in open_clip.list_models():
        raise ValueError(
            f"unknown backbone {cfg.backbone!r}; open_clip names (ours: {list(names)}), e.g. ViT-B-32"
        )
    kwargs = dict(force_quick_gelu=cfg.quick_gelu, device=device)
    if cfg.pretrained is None:
        logger.warning("pretrained=None: %s has random weights (tests and dry runs only)", cfg.backbone)
        return open_clip.create_model(cfg.backbone, pretrained=None, **kwargs)
    path = Path(cfg.pretrained).expanduser()
    if path.is_file():
        return _create_from_file(cfg, path, kwargs)
    tags = open_clip.list_pretrained_tags_by_model(cfg.backbone)
    if cfg.pretrained not in tags:
        raise FileNotFoundError(
            f"pretrained={cfg.pretrained!r} is neither an existing checkpoint file nor an open_clip tag of "
            f"{cfg.backbone} (tags: {tags}). Pass a local .pt/.bin/.safetensors path, a tag, or None."
        )
    try:
        return open_clip.create_model(cfg.backbone, pretrained=cfg.pretrained, **kwargs)
    except Exception as e:  # download or cache failures surface as many exception types
        raise RuntimeError(
            f"could not obtain {cfg.backbone} weights for pretrained={cfg.pretrained!r}: {e}. {_offline_hint(cfg)}"
        ) from e


def _create_from_file(cfg: DiscoVLAConfig, path: Path, kwargs: dict) -> CLIP:
    try:
        if not _is_torchscript_archive(path):
            return open_clip.create_model(cfg.backbone, pretrained=str(path), **kwargs)
        clip = open_clip.create_model(cfg.backbone, pretrained=None, **kwargs)
        with warnings.catch_warnings():  # torch.jit.load is deprecated, yet OpenAI ships TorchScript files
            warnings.simplefilter("ignore", FutureWarning)
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
        persistent = clip.state_dict().keys()
        extras = {"input_resolution", "context_length", "vocab_size"}  # OpenAI archive metadata
        extras |= {name for name, _ in clip.named_buffers()} - persistent  # e.g. the causal attn_mask
        state = {k: v for k, v in state.items() if k not in extras}
        clip.load_state_dict(state, strict=True)
        return clip
    except Exception as e:
        raise RuntimeError(
            f"{path}: could not load it as a {cfg.backbone} checkpoint ({e}). Expected an open_clip / OpenAI "
            f"CLIP state dict of the same architecture (.pt/.pth/.bin/.safetensors or OpenAI's TorchScript file)."
        ) from e


def _check_architecture(clip: nn.Module, cfg: DiscoVLAConfig) -> None:
    """DiscoVLA needs open_clip's plain CLIP: ViT with CLS pooling, text pooled at the EOT (argmax) token."""
    problems = []
    if type(clip) is not CLIP:
        problems.append(f"model class {type(clip).__name__} (need open_clip.model.CLIP)")
    elif not isinstance(clip.visual, VisionTransformer):
        problems.append(f"vision tower {type(clip.visual).__name__} (need VisionTransformer)")
    else:
        if clip.visual.attn_pool is not None or clip.visual.pool_type != "tok":
            problems.append("vision pooling is not the CLS token")
        if clip.text_pool_type != "argmax":
            problems.append(f"text pooling {clip.text_pool_type!r} (need 'argmax', the EOT token)")
        for tower, transformer in (("vision", clip.visual.transformer), ("text", clip.transformer)):
            if not all(type(b) is ResidualAttentionBlock for b in transformer.resblocks):
                problems.append(f"{tower} blocks are not ResidualAttentionBlock with nn.MultiheadAttention")
            if not getattr(transformer, "batch_first", False):
                problems.append(f"{tower} transformer is not batch first")
    if problems:
        raise ValueError(f"backbone {cfg.backbone!r} is not supported by DiscoVLA: " + "; ".join(problems))
    for tower, transformer, top in (
        ("vision", clip.visual.transformer, cfg.h_v),
        ("text", clip.transformer, cfg.h_l),
    ):
        if top > len(transformer.resblocks):
            raise ValueError(f"h_{tower[0]}={top} exceeds the {len(transformer.resblocks)} {tower} blocks")


def _inject(transformer: nn.Module, tower: str, cfg: DiscoVLAConfig, top: int) -> None:
    """Replace ``block.attn`` of every block (the top ``top`` blocks get IVFusion) and, with
    ``cfg.lean_mlp``, wrap ``block.mlp`` in :class:`~training.lora.FrozenMLP`."""
    blocks = transformer.resblocks
    for i, block in enumerate(blocks):
        if i >= len(blocks) - top:
            block.attn = IVFusionAttention(block.attn, tower=tower, rank=cfg.lora_rank)
        else:
            block.attn = LoRAAttention(block.attn, rank=cfg.lora_rank)
        if cfg.lean_mlp:
            block.mlp = FrozenMLP(block.mlp, recompute=cfg.mlp_recompute)


def build_model(cfg: DiscoVLAConfig, device: str | torch.device = "cpu") -> DiscoVLA:
    """Frozen open_clip CLIP + LoRA in every block + IVFusion in the top h_v / h_l blocks."""
    clip = _create_clip(cfg, device)
    _check_architecture(clip, cfg)
    clip.requires_grad_(False)  # everything of CLIP frozen, logit_scale included
    _inject(clip.visual.transformer, "vision", cfg, cfg.h_v)
    _inject(clip.transformer, "text", cfg, cfg.h_l)
    model = DiscoVLA(clip, cfg).to(device)
    total = sum(p.numel() for p in model.parameters())
    logger.info(
        "DiscoVLA %s: %d trainable of %d parameters %s",
        cfg.backbone,
        model.trainable_parameters(),
        total,
        model.parameter_groups(),
    )
    return model


class DiscoVLA(nn.Module):
    """The encoders the trainer and evaluator call. Features are L2-normalised; D = the CLIP embed dim."""

    def __init__(self, clip: CLIP, cfg: DiscoVLAConfig):
        super().__init__()
        self.clip = clip
        self.cfg = cfg
        self.tokenizer = open_clip.get_tokenizer(cfg.backbone, context_length=cfg.max_words)
        self.preprocess_cfg = dict(open_clip.get_model_preprocess_cfg(clip))  # size, mean, std, interpolation
        if cfg.max_words > self.context_length:
            raise ValueError(
                f"max_words={cfg.max_words} exceeds the backbone's {self.context_length} positions"
            )

    # ---------------------------------------------------------------- properties and bookkeeping
    @property
    def context_length(self) -> int:
        return self.clip.positional_embedding.shape[0]

    @property
    def embed_dim(self) -> int:
        return self.clip.visual.output_dim

    @property
    def logit_scale_value(self) -> float:
        """λ = exp(logit_scale), frozen (100 for OpenAI CLIP)."""
        return float(self.clip.logit_scale.detach().exp())

    def trainable_parameters(self) -> int:
        """Parameters of the adapters (LoRA matrices and fusion adapters, identified by module type)."""
        return sum(self.parameter_groups().values())

    def parameter_groups(self) -> dict[str, int]:
        """Adapter parameter counts: vision_lora, vision_adapters, text_lora, text_adapters."""
        return {g: sum(p.numel() for p in ps.values()) for g, ps in parameter_groups(self).items()}

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """The adapter tensors only, by parameter name (what :mod:`training.adapters` saves)."""
        return {name: p.detach() for name, p in adapter_parameters(self).items()}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable:
            raise NotImplementedError(
                "gradient checkpointing would recompute IVFusion blocks outside their frame group (training.ivfusion)"
            )

    # ---------------------------------------------------------------- encoders
    def encode_video(
        self, frames: torch.Tensor, frame_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """frames [B, F, 3, H, W] -> (frame features z [B, F, D], video features v̄ [B, D]), both normalised.

        z[b,f] = ln_post(H[b,f,0])·proj; v̄ = normalise(Σ_f m_f·ẑ_f / max(Σ_f m_f, 1)) with ẑ = z/|z|.
        ``frame_mask`` [B, F] (1 = real frame) only weighs the mean: as in the reference, padded frames
        are still keys of the video-level attention (docs/method.md "IVFusion", masks).
        """
        if frames.dim() != 5:
            raise ValueError(f"frames must be [B, F, 3, H, W], got shape {tuple(frames.shape)}")
        b, nf = frames.shape[:2]
        with frame_group(FrameGroup("vision", num_frames=nf)):
            z = self._vision_tower(frames.flatten(0, 1))  # [B·F, D]
        z = F.normalize(z, dim=-1).view(b, nf, -1)  # [B, F, D]
        m = (
            torch.ones(b, nf, device=z.device, dtype=z.dtype)
            if frame_mask is None
            else frame_mask.to(z.dtype)
        )
        if m.shape != (b, nf):
            raise ValueError(f"frame_mask must be [B, F] = [{b}, {nf}], got {tuple(m.shape)}")
        video = (z * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True).clamp_min(1.0)  # masked mean [B, D]
        return z, F.normalize(video, dim=-1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Query captions [B, L] -> [B, D] normalised: LoRA-CLIP, no video-level branch, no adapter."""
        if tokens.dim() != 2:
            raise ValueError(f"text tokens must be [B, L], got shape {tuple(tokens.shape)}")
        tokens, eot = self._trim(tokens)
        return F.normalize(
            self._text_tower(tokens, eot, attn_mask=self._causal_mask(tokens.shape[1])), dim=-1
        )

    def encode_pseudo_captions(self, tokens: torch.Tensor) -> torch.Tensor:
        """Groups of F pseudo captions [B, F, L] -> [B, F, D] normalised, IVFusion in the top h_l blocks.

        Image level: causal + key-padding mask per caption. Video level: each EOT query attends to every
        valid token (position <= its caption's EOT) of the F captions of its group, non-causally.
        """
        if tokens.dim() != 3:
            raise ValueError(f"pseudo caption tokens must be [B, F, L], got shape {tuple(tokens.shape)}")
        b, nf = tokens.shape[:2]
        flat, eot = self._trim(tokens.flatten(0, 1))  # [B·F, L'], [B·F] EOT = the highest token id
        length = flat.shape[1]
        valid = torch.arange(length, device=flat.device) <= eot.unsqueeze(1)  # [B·F, L] True = real token
        causal = self._causal_mask(length)  # [L, L] additive
        padding = torch.zeros(valid.shape, dtype=causal.dtype, device=causal.device).masked_fill(
            ~valid, float("-inf")
        )
        mask = causal + padding[:, None, None, :]  # [B·F, 1, L, L] additive
        with frame_group(FrameGroup("text", num_frames=nf, query_index=eot, key_valid=valid)):
            feats = self._text_tower(flat, eot, attn_mask=mask)  # [B·F, D]
        return F.normalize(feats, dim=-1).view(b, nf, -1)

    def forward(self, frames=None, frame_mask=None, text=None, captions=None) -> dict[str, torch.Tensor]:
        """All requested features in one call (one forward for DistributedDataParallel)."""
        out = {}
        if frames is not None:
            out["frame_feats"], out["video_feats"] = self.encode_video(frames, frame_mask)
        if text is not None:
            out["text_feats"] = self.encode_text(text)
        if captions is not None:
            out["caption_feats"] = self.encode_pseudo_captions(captions)
        return out

    # ---------------------------------------------------------------- tower internals
    def _vision_tower(self, images: torch.Tensor) -> torch.Tensor:
        """open_clip's VisionTransformer.forward with CLS pooling: images [N, 3, H, W] -> [N, D].

        The last block computes the CLS token alone (:func:`_blocks_at`); the features are the same.
        """
        visual = self.clip.visual
        x = visual.conv1(images).flatten(2).transpose(1, 2)  # [N, grid², width]
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # [N, 1, width]
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)  # [N, 1 + grid², width]
        x = visual.ln_pre(visual.patch_dropout(x))
        x = visual.ln_post(_blocks_at(visual.transformer.resblocks, x, None, None))  # CLS [N, width]
        return x @ visual.proj if visual.proj is not None else x  # [N, D]

    def _causal_mask(self, length: int) -> torch.Tensor:
        return self.clip.attn_mask[:length, :length]  # open_clip's causal mask, sliced to L

    def _trim(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens [N, L] -> (tokens[:, :L'], EOT positions [N]) with L' = the last EOT + 1.

        Positions after a sequence's EOT change nothing the encoders return (causal mask, padding masked
        in the video level, features read at the EOT), so they are not computed at all.
        """
        if tokens.shape[-1] > self.context_length:
            raise ValueError(
                f"text of {tokens.shape[-1]} tokens exceeds the backbone's {self.context_length} positions"
            )
        eot = tokens.argmax(dim=-1)  # EOT = the highest token id
        return tokens[..., : int(eot.max()) + 1], eot

    def _text_tower(self, tokens: torch.Tensor, eot: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        """open_clip's CLIP.encode_text for any L <= context (positions and mask sliced to L), read at the EOT."""
        clip = self.clip
        x = clip.token_embedding(tokens)  # [N, L, d_model]
        x = x + clip.positional_embedding[: tokens.shape[1]].to(x.dtype)
        x = clip.ln_final(
            _blocks_at(clip.transformer.resblocks, x, eot, attn_mask.to(x.dtype))
        )  # [N, d_model]
        proj = clip.text_projection
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj  # [N, D]


def _blocks_at(blocks: nn.ModuleList, x: torch.Tensor, t: torch.Tensor | None, attn_mask) -> torch.Tensor:
    """Run open_clip residual blocks on x [N, L, D] (batch first) and return the last block's output at
    position ``t`` only ([N] positions, None = 0): [N, D].

    The last block reads every position as keys and values but computes its query, attention output,
    residual and MLP for position t alone: the same numbers as the full block at t, without the
    (L - 1)/L of its work whose result nobody reads.
    """
    for block in blocks[:-1]:  # open_clip's ResidualAttentionBlock.forward (self-attention)
        x = x + block.ls_1(block.attn.attend_block(x, attn_mask, norm=block.ln_1))  # ln_1 folded in
        x = _mlp_residual(block, x)
    last = blocks[-1]
    x_t = x[:, 0] if t is None else x[torch.arange(x.shape[0], device=x.device), t]  # [N, D]
    x_t = x_t + last.ls_1(last.attn.attend_block_at(last.ln_1(x), t, attn_mask))
    return _mlp_residual(last, x_t)


def _mlp_residual(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """x + ls_2(mlp(ln_2(x))); a :class:`~training.lora.FrozenMLP` folds ln_2 in (keeps only x for backward)."""
    if isinstance(block.mlp, FrozenMLP):
        return x + block.ls_2(block.mlp(x, norm=block.ln_2))
    return x + block.ls_2(block.mlp(block.ln_2(x)))
