"""The embedded demo as a library: what ``python -m pipelines.demo`` runs, and what benchmarks and tests call.

    steps.py     one function per demo step: the pipeline commands it runs (printed first), the in-process
                 test evaluation (per kind of text, with the teacher report), the search step
    results.py   the per-kind ablation table, the diagnostics picture and the results page
    run.py       the whole demo (run_demo) and the time each step took (StepClock)
    sweep.py     the validation sweep that chose the demo's learning rate and epochs

It imports captioning, training, search and shared, and none of them imports it.
"""
