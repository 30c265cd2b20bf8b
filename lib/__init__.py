"""Helpers the M44 notebook calls: one module per phase or concern."""

from lib import evaluation, preflight, report, training
from lib.run import Run

__all__ = ["Run", "evaluation", "preflight", "report", "training"]
