"""What lib.execute prints while the notebook runs: each phase as it starts and ends, training's steps with the time
left. Read from the files the run keeps as it goes (phases.json, training_log.txt), so it needs nothing from the
kernel, and papermill's cell log can stay behind --verbose.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

from lib.contract import PHASES, TRAINING_LOG

POLL_S = 2.0
TRAINING_LINES = 10  # training progress lines at most (about every tenth of the steps), besides its start and end
# training_log.txt's line (lib/training_worker.py): "step   300/1500 | loss 0.5121 | ... | 14.2 s | about 57 s left"
STEP_LINE = re.compile(r"^step +(?P<step>\d+)/(?P<of>\d+) \| loss (?P<loss>\S+) .*\| (?P<elapsed>[\d.]+) s \|")
NAMES = {"parameters": "parameters", "preflight": "M44.0 pre-flight", "training": "M44.1 training",
         "evaluation": "M44.2 evaluation", "repository guard": "repository guard", "report": "report"}


def duration(seconds: float) -> str:
    """'42 s', '3 min 05 s', '1 h 02 min'."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def time_left(step: int, of: int, elapsed_s: float, since: tuple[int, float]) -> str:
    """'about 3 min 05 s left': the remaining steps at the pace since step `since[0]` (reached at `since[1]` s). The
    pace starts at a logged step, leaving out loading and the first step's warm-up, which would inflate it."""
    first_step, first_s = since
    if step <= first_step:
        return "time left: from the next line on"
    return f"about {duration((elapsed_s - first_s) / (step - first_step) * (of - step))} left"


class Progress:
    """A thread that prints the run's progress from its folder until `stop()`; one line per event."""

    def __init__(self, run_dir: Path, say=print):
        self.run_dir, self.say = run_dir, say
        self.seen: dict[str, str] = {}  # phase -> the status last printed
        self.next_step = 0  # the training step from which the next progress line is printed
        self.first: tuple[int, float] | None = None  # the first step seen and its elapsed seconds: the pace's start
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="m44-progress", daemon=True)

    def __enter__(self) -> Progress:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join(timeout=POLL_S * 2)
        self.poll()  # what happened since the last look

    def _watch(self) -> None:
        while not self.done.wait(POLL_S):
            self.poll()

    def poll(self) -> None:
        """Print what changed since the last poll; a file caught half-replaced is read at the next one."""
        try:
            phases = json.loads((self.run_dir / PHASES).read_text(encoding="utf-8"))["phases"]
        except (OSError, ValueError, KeyError, TypeError):
            return
        for phase in phases:
            name, status = phase["name"], phase["status"]
            if self.seen.get(name) == status:
                continue
            self.seen[name] = status
            self.say(self.line(phase), flush=True)
        if self.seen.get("training") == "running":
            self._training()

    def line(self, phase: dict) -> str:
        label = NAMES.get(phase["name"], phase["name"])
        if phase["status"] == "running":
            return f"{label}: running"
        if phase["status"] == "completed":
            return f"{label}: completed in {duration(phase['duration_s'])}"
        return f"{label}: {phase['status'].upper()}{': ' + phase['cause'] if phase['cause'] else ''}"

    def _training(self) -> None:
        """A line about every tenth of the steps: where training is, its loss and the time left."""
        try:
            lines = (self.run_dir / TRAINING_LOG).read_text(encoding="utf-8").splitlines()
        except OSError:
            return
        match = next((m for line in reversed(lines) if (m := STEP_LINE.match(line))), None)
        if match is None:
            return
        step, of, elapsed = int(match["step"]), int(match["of"]), float(match["elapsed"])
        if step < self.next_step or step == of:
            return
        self.next_step = step + max(1, of // TRAINING_LINES)
        self.first = self.first or (step, elapsed)
        self.say(f"M44.1 training: step {step}/{of}, loss {match['loss']}, {duration(elapsed)} so far, "
                 f"{time_left(step, of, elapsed, self.first)}", flush=True)
