"""Helpers the M44 notebook calls: one module per phase or concern."""

import warnings

# tqdm.auto warns in a kernel without ipywidgets; the run shows no progress bars (see
# lib/modeling.py), it prints one line per logging step and per generation batch instead.
warnings.filterwarnings("ignore", message="IProgress not found")

from lib import evaluation, preflight, report, training  # noqa: E402
from lib.run import Run  # noqa: E402

__all__ = ["Run", "evaluation", "preflight", "report", "training"]
