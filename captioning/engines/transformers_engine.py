"""The transformers backend: ``LlavaNextForConditionalGeneration`` + the processor's chat template.

Runs on every machine (CPU or GPU) without vLLM. Frames are captioned ``spec.batch_size`` at a time
with left padding (frames of one video share a size, so their prompts have equal length and no
padding is needed). Greedy by default; with ``temperature > 0`` sampling is seeded per call from
``sampling.seed`` so a re-run repeats itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from captioning.config import EngineSpec
from captioning.engines.base import FINISH_LENGTH, FINISH_STOP, CaptionEngine, CaptionResult, to_pil
from captioning.prompts import chat_template_sha256, render_prompt

logger = logging.getLogger(__name__)


def resolve_device_dtype(device: str, dtype: str) -> tuple[str, str]:
    """``auto`` device -> cuda when available, else cpu; ``auto`` dtype -> bfloat16 on cuda, float32 on cpu."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    return device, dtype


class TransformersEngine(CaptionEngine):
    name = "transformers"

    def __init__(self, spec: EngineSpec):
        super().__init__(spec)
        import torch
        from transformers import AutoProcessor, LlavaNextForConditionalGeneration

        if spec.threads:
            torch.set_num_threads(spec.threads)
        self.device, self.dtype = resolve_device_dtype(spec.device, spec.dtype)
        self.processor = AutoProcessor.from_pretrained(spec.model, revision=spec.revision)
        self.processor.tokenizer.padding_side = "left"  # generation continues right after the prompt
        self.model = (
            LlavaNextForConditionalGeneration.from_pretrained(
                spec.model, revision=spec.revision, dtype=getattr(torch, self.dtype)
            )
            .to(self.device)
            .eval()
        )
        self.prompt = render_prompt(self.processor, spec.prompt_text, spec.model)
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        if not self.eos_ids:
            self.eos_ids = {self.processor.tokenizer.eos_token_id}
        logger.info(
            "transformers engine: %s on %s (%s), prompt %r", spec.model, self.device, self.dtype, self.prompt
        )

    def caption(self, images: Sequence) -> list[CaptionResult]:
        pil = [to_pil(image) for image in images]
        results: list[CaptionResult] = []
        started = time.perf_counter()
        for start in range(0, len(pil), self.spec.batch_size):
            results.extend(self._generate(pil[start : start + self.spec.batch_size]))
        self.busy_seconds += time.perf_counter() - started
        return results

    def _generate(self, images: list) -> list[CaptionResult]:
        import torch

        inputs = self.processor(
            images=images, text=[self.prompt] * len(images), return_tensors="pt", padding=True
        ).to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        sampling = self.spec.sampling
        options = {"max_new_tokens": sampling.max_tokens, "do_sample": not sampling.greedy}
        if sampling.greedy:
            options.update(temperature=None, top_p=None, top_k=None)
        else:
            options.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=None)
            torch.manual_seed(sampling.seed)
        if self.model.generation_config.pad_token_id is None:
            options["pad_token_id"] = self.processor.tokenizer.pad_token_id or min(self.eos_ids)
        with torch.inference_mode():
            output = self.model.generate(**inputs, **options)
        new_tokens = output[:, inputs["input_ids"].shape[1] :]  # [B, <= max_tokens]
        return [self._result(row.tolist()) for row in new_tokens]

    def _result(self, ids: list[int]) -> CaptionResult:
        """Cut at the first end-of-sequence token (kept in the count, as vLLM does); later ids are padding."""
        stop = next((i for i, tok in enumerate(ids) if tok in self.eos_ids), None)
        kept = ids if stop is None else ids[: stop + 1]
        text = self.processor.tokenizer.decode(kept, skip_special_tokens=True).strip()
        return CaptionResult(text, FINISH_LENGTH if stop is None else FINISH_STOP, len(kept), tuple(kept))

    def provenance(self) -> dict:
        return self.base_provenance(
            model_revision=self.spec.revision,
            dtype=self.dtype,
            chat_template_sha256=chat_template_sha256(self.processor),
            packages=("transformers", "torch", "tokenizers"),
        )
