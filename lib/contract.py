"""The evidence contract as data: every file name of a run folder, and which files each outcome requires.

A leaf module (standard library only): the phases that write these files, the verifier that
reads them and the report that shows them all take the names from here, spelled once.
"""

from __future__ import annotations

# Written at the start: the launcher's claim on the folder, the parameters, and each phase as it starts and ends.
CLAIM = "claim.json"
INTERACTIVE = "interactive"  # claim.json's launcher for a run a person steps through in Jupyter (lib/run.py)
LAB_MARKER = "__m44_lab__"  # set by the cell `make lab` adds to its scratch copy: marks the run interactive
CONFIG = "config.json"
PHASES = "phases.json"  # the phase records so far and the repository state at the start: a run stopped
                        # before consolidation can still be consolidated (by lib.execute) or explained (lib.verify)
PHASE_ORDER = ("parameters", "preflight", "training", "evaluation")  # the notebook's phases, in order
STOP_REQUEST = "stop_request.json"  # written by lib.execute when a signal stops it: which one, and when
# M44.0 pre-flight.
ENV_SNAPSHOT = "env_snapshot.txt"
GPU_SNAPSHOT = "gpu_snapshot.txt"
PREFLIGHT = "preflight.json"  # every check with its status and detail: the [PASS]/[FAIL] table as data
DATA_REPORT = "data_report.json"  # the data policy's findings: repeats, duplicates, leakage, with line numbers
BASE_MODEL = "base_model"  # a model built in pre-flight (the embedded default), ignored by git
# M44.1 training.
TRAINING_LOG = "training_log.txt"
TRAINING_METRICS = "training_metrics.json"
CHECKPOINTS = "checkpoints"  # ignored by git
FINAL_MODEL = f"{CHECKPOINTS}/final"
# The final checkpoint of a lora/qlora run is peft's adapter folder (peft's own names), with the tokenizer; with
# merge_adapter the merged weights go beside it. Every final checkpoint gets a model card (lib/model_card.py).
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MERGED_MODEL = f"{FINAL_MODEL}/merged"
MODEL_CARD = f"{FINAL_MODEL}/README.md"  # Hugging Face's file name for a model card
LOSS_PLOT = "loss_curve.png"
LEARNING_RATE_PLOT = "learning_rate.png"
THROUGHPUT_PLOT = "throughput.png"
MEMORY_PLOT = "memory.png"
PLOTS = (LOSS_PLOT, LEARNING_RATE_PLOT, THROUGHPUT_PLOT, MEMORY_PLOT)  # in the order the report shows them
# M44.1 and M44.2: the machine while they run (lib/telemetry.py), one JSON line per sample, appended, and its timeline.
TELEMETRY = "system_metrics.jsonl"
TIMELINE_PLOT = "system_metrics.png"
# M44.2 evaluation.
EVAL_RESULTS = "evaluation_results.json"
EVAL_SUMMARY = "evaluation_summary.md"
COMPARISON_PLOT = "comparison.png"  # baseline vs trained with the difference's CI: the report's first screen
# M44.3 consolidation.
SUMMARY_FACTS = "m44_summary.json"  # the facts m44_summary.md and failure_analysis.md are rendered from
SUMMARY = "m44_summary.md"
FAILURE_ANALYSIS = "failure_analysis.md"
MANIFEST = "manifest.json"
# After the notebook: papermill's executed notebook and nbconvert's report.
NOTEBOOK = "run.ipynb"
REPORT = "run.html"

REQUIRED_ALWAYS = (ENV_SNAPSHOT, GPU_SNAPSHOT, TRAINING_LOG, TRAINING_METRICS, SUMMARY)
REQUIRED_ON_SUCCESS = (EVAL_RESULTS, EVAL_SUMMARY)
REQUIRED_ON_FAILURE = (FAILURE_ANALYSIS,)
# Model weights: too big for git, so a committed run folder arrives without them.
WEIGHT_DIRS = (CHECKPOINTS, BASE_MODEL)

# m44_summary.md holds both lines verbatim, whatever the outcome.
STATEMENTS = (
    "> M44 is post-submission, evidence-only.",
    "> M42 remains the authoritative submission artifact.",
)


# What each phase writes (names and folders at the top of the run folder). Consolidation writes the same
# names for a phase that did not run, so they belong to that phase too. An interactive run that re-runs a
# phase keeps only the files of the phases before it, plus the run's own records: nothing stale survives.
PHASE_FILES = {
    "parameters": (CONFIG,),
    "preflight": (ENV_SNAPSHOT, GPU_SNAPSHOT, PREFLIGHT, DATA_REPORT, BASE_MODEL),
    # Training starts the timeline; evaluation appends to it and draws it again (lib/telemetry.py), and a phase
    # that runs again replaces its own samples.
    "training": (TRAINING_LOG, TRAINING_METRICS, CHECKPOINTS, *PLOTS, TELEMETRY, TIMELINE_PLOT),
    "evaluation": (EVAL_RESULTS, EVAL_SUMMARY, COMPARISON_PLOT),
}
RUN_RECORDS = (CLAIM, PHASES, STOP_REQUEST)  # who runs the folder and what happened: kept through re-runs
# Written by consolidation and after it: an interactive run deletes them when it is consolidated again.
FINISH_FILES = (SUMMARY_FACTS, SUMMARY, FAILURE_ANALYSIS, MANIFEST, NOTEBOOK, REPORT)


def files_before(phase: str) -> frozenset[str]:
    """The names an interactive run keeps when `phase` runs again: the run's records and earlier phases' files."""
    earlier = PHASE_ORDER[:PHASE_ORDER.index(phase)]
    return frozenset(RUN_RECORDS).union(*(PHASE_FILES[name] for name in earlier))


def required(completed: bool) -> tuple[str, ...]:
    """The files a run folder must hold, by its outcome."""
    return REQUIRED_ALWAYS + (REQUIRED_ON_SUCCESS if completed else REQUIRED_ON_FAILURE)
