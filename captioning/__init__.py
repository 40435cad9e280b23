"""Per-frame pseudo captions with LLaVA-NeXT: the first stage of DiscoVLA (``python -m pipelines.caption``).

Module map (each file has one job; ``shared`` holds the frame sampler, datasets and the shard format)::

    config.py      CaptionConfig (one run), EngineSpec (one engine), SamplingConfig; checked on construction
    prompts.py     PRESETS (named, versioned questions), resolve_prompt, render_prompt (model's chat template)
    models.py      resolve_model: local dir or Hub id -> one revision (no weight download); model_context_length
    errors.py      typed errors between the stages: EngineStartError, EngineBrokenError, EnginesLostError
    engines/       CaptionEngine interface (base.py); transformers and vLLM backends; make_engine, choose_backend
    provenance.py  run_provenance: what made the captions, compared on resume
    plan.py        videos -> deterministic shards; skip finished shards, --retry-failed, refusals
    workers.py     Ray work: decode_video (CPU task, recycled), EngineWorker (engine actor) -> caption rows
    pipeline.py    run_captioning(items, cfg, dataset=, split=): settings, provenance, plan, RunSummary
    engine_pool.py EnginePool: the engine actors, replaced when they die, dropped when they cannot start
    feeder.py      Feeder: bounded feeding, rows collected exactly once, poison videos isolated, shard writing
    tiny_model.py  a tiny random LLaVA-NeXT saved locally, for tests, the demo and benchmarks

Library code never calls ``ray.init``; the CLI (or the caller) does. ``captioning`` and ``training``
never import each other: caption shards on disk are the only link.
"""
