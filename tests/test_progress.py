"""What lib.execute prints while a run goes on, read from the run folder (lib/progress.py)."""

from __future__ import annotations

import json

from lib.progress import TRAINING_LINES, Progress, duration, time_left


def log_line(step: int, of: int, elapsed: float) -> str:
    """A training_log.txt line as lib/training_worker.py writes it."""
    return (f"step {step:>5}/{of} | loss 1.2345 | lr 1.00e-03 | grad_norm 0.500 | 1,000 tok/s | {elapsed:.1f} s | "
            f"{time_left(step, of, elapsed, (1, 1.0))}\n")


def write_phases(run_dir, *phases):
    (run_dir / "phases.json").write_text(json.dumps({"phases": [
        {"name": name, "status": status, "duration_s": seconds, "cause": cause}
        for name, status, seconds, cause in phases]}), encoding="utf-8")


def test_durations_read_as_words():
    assert [duration(s) for s in (0, 42.4, 185, 3725)] == ["0 s", "42 s", "3 min 05 s", "1 h 02 min"]


def test_the_time_left_is_the_pace_since_the_first_logged_step_not_since_the_start():
    """Loading and the first step's warm-up (30 s here) would make 1,000 steps of 0.1 s look like 5 hours."""
    assert time_left(1, 1001, 30.0, (1, 30.0)) == "time left: from the next line on"
    assert time_left(101, 1001, 40.0, (1, 30.0)) == "about 1 min 30 s left"
    assert time_left(1001, 1001, 130.0, (1, 30.0)) == "about 0 s left"


def test_progress_prints_each_phase_once_and_training_about_every_tenth(tmp_path):
    printed = []
    progress = Progress(tmp_path, say=lambda line, flush: printed.append(line))
    progress.poll()  # nothing there yet: nothing printed, nothing raised
    write_phases(tmp_path, ("preflight", "completed", 2.4, None), ("training", "running", 0, None))
    (tmp_path / "training_log.txt").write_text(log_line(10, 1000, 30.0), encoding="utf-8")
    progress.poll()
    progress.poll()  # the same state again: no new line
    assert printed == ["M44.0 pre-flight: completed in 2 s", "M44.1 training: running",
                       "M44.1 training: step 10/1000, loss 1.2345, 30 s so far, time left: from the next line on"]
    with (tmp_path / "training_log.txt").open("a", encoding="utf-8") as log:
        for step in range(20, 1001, 10):
            log.write(log_line(step, 1000, 30.0 + (step - 10) * 0.1))
            log.flush()
            progress.poll()
    steps = [line for line in printed if "training: step" in line]
    assert len(steps) <= TRAINING_LINES + 1 and "step 1000/1000" not in "".join(steps)  # the end is its own line
    assert steps[1] == "M44.1 training: step 110/1000, loss 1.2345, 40 s so far, about 1 min 29 s left"
    write_phases(tmp_path, ("preflight", "completed", 2.4, None), ("training", "failed", 130.0, "disk on fire"))
    progress.poll()
    assert printed[-1] == "M44.1 training: FAILED: disk on fire"
