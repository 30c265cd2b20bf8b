"""The M44 run: the notebook's helpers, one module per concern, in layers (tests/test_architecture.py holds the table).

    entry points    execute, lab, reevaluate, data_check, compare; the workers the kernel starts: training_worker,
                    evaluation_worker
    the run         run (the phase guard), interactive (re-running cells), report (display only)
    phases          preflight, training, evaluation, consolidation
    building        model_source, model_loading, model_builder, gguf_model, prompt_format, generation,
                    resources, throughput, cpu_bfloat16, snapshot, plots, launcher, progress, telemetry, nvml,
                    lora (peft: LoRA and QLoRA)
    evidence core   config, data, scoring, stats, results, summary, model_card, verify, evidence, run_folder,
                    repository, rehearsal, telemetry_summary (torch-free: `python -m lib.verify` needs neither torch
                    nor a model)
    leaves          contract, redaction, units, printable, console, keep_awake

Each module imports only from its own layer and those below it. Importing the package imports no other module.
"""

import warnings

# transformers imports tqdm.auto, which warns in a Jupyter kernel without ipywidgets. The run shows no progress
# bars (lib/model_loading.py turns them off); it prints one line per logging step and generation batch instead.
# Set here, where every `import lib.<module>` passes first, so no import order in the notebook matters.
warnings.filterwarnings("ignore", message="IProgress not found")
