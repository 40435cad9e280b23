"""Which parameters of a DiscoVLA model are its adapters, and how they group.

What counts as an adapter is decided by module type, never by ``requires_grad``: the ``lora_A`` /
``lora_B`` matrices owned by each :class:`~training.lora.LoRAAttention` (IVFusion blocks included) and
every parameter of each :class:`~training.ivfusion.FusionAdapter`. :func:`adapter_parameters` lists them
in model order (the optimiser's and the checkpoint's order); :func:`parameter_groups` is the one place
that splits them into ``vision_lora``, ``vision_adapters``, ``text_lora`` and ``text_adapters``.

:mod:`training.model` (parameter counts) and :mod:`training.adapters` (the adapter files) both use this
module; it imports neither of them.
"""

from __future__ import annotations

from torch import nn

from training.ivfusion import FusionAdapter
from training.lora import LoRAAttention

__all__ = ["GROUPS", "adapter_parameters", "lora_merged", "parameter_groups"]

GROUPS = ("vision_lora", "vision_adapters", "text_lora", "text_adapters")


def adapter_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """``{name: parameter}`` of every LoRA matrix and fusion adapter of ``model``, in model order."""
    out = {}
    for prefix, module in model.named_modules():
        if isinstance(module, LoRAAttention):
            own = module.named_parameters(recurse=False)  # lora_A, lora_B (the frozen base_layer is a child)
        elif isinstance(module, FusionAdapter):
            own = module.named_parameters()
        else:
            continue
        out.update((f"{prefix}.{name}" if prefix else name, p) for name, p in own)
    return out


def parameter_groups(model: nn.Module) -> dict[str, dict[str, nn.Parameter]]:
    """The adapters by group (all four of :data:`GROUPS`, possibly empty), each ``{name: parameter}``.

    The tower is the CLIP tower that holds the module (``visual`` in its path: vision, else text); the
    kind is ``adapters`` for a FusionAdapter's parameters and ``lora`` for LoRA matrices.
    """
    groups: dict[str, dict[str, nn.Parameter]] = {g: {} for g in GROUPS}
    for name, p in adapter_parameters(model).items():
        parts = name.split(".")
        tower = "vision" if "visual" in parts else "text"
        kind = "lora" if parts[-1] in ("lora_A", "lora_B") else "adapters"
        groups[f"{tower}_{kind}"][name] = p
    return groups


def lora_merged(model: nn.Module) -> bool:
    """True when :func:`training.lora.merge_lora` has folded LoRA into ``model``'s frozen weights."""
    return any(isinstance(m, LoRAAttention) and m.lora_A is None for m in model.modules())
