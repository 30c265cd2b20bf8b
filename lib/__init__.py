"""The M44 run: the notebook's helpers, one module per concern. Importing the package imports nothing else.

The layers, each importing only from those below it:
    entry points   execute, verify, reevaluate, trainer (the training worker), data (`check`)
    the run        run (phases, consolidation), report (display only)
    phases         preflight, training, evaluation, consolidation
    building       model_source, modeling, embedded, gguf_model, generation, resources, throughput,
                   snapshot, plots
    facts          summary, results, scoring, stats, data, render, config
    leaves         contract (the evidence file names), evidence (atomic writes), redaction
"""
