"""The repository a run comes from: its commit and working-tree state, recorded at the start and compared at the end.

Torch-free and read-only: git is asked, never told. Without git on PATH, or outside a checkout, the state is
unknown, and pre-flight says so (an official run then fails pre-flight: its code could not be named).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from lib.config import REPO_ROOT

UNKNOWN_COMMIT = "unknown (not a git checkout, or git is not on PATH)"


def command_output(cmd: list[str], cwd: Path | None = None) -> str | None:
    """Output of a command, or None when it is absent or fails (a snapshot never raises)."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, encoding="utf-8", timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.rstrip("\n") if done.returncode == 0 else None


# Untracked or ignored paths here are other runs' folders, scratch notebooks and test artifacts: never
# written by this run (it writes only inside its own folder), so another run working beside it is no change.
SCRATCH = ("submission_runs/", "build/")


def describe_repository(run_dir: Path | None = None) -> dict:
    """Commit and working-tree state of the repository: what a run could change, and nothing else.

    `status` lists changed, untracked and ignored paths (so a stray bytecode cache shows), leaving out
    the run folder and the untracked or ignored contents of SCRATCH (other runs, scratch notebooks); a
    tracked file changed anywhere, those folders included, still shows. `diff_sha256` hashes the diff of
    tracked files: equal states before and after a run mean the run changed nothing outside its folder.
    """
    sha = command_output(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT)
    status = command_output(["git", "status", "--porcelain", "--ignored"], cwd=REPO_ROOT)
    diff = command_output(["git", "diff", "HEAD", "--binary"], cwd=REPO_ROOT)
    lines = [line for line in (status or "").splitlines()
             if not _inside(line[3:], run_dir) and not _scratch(line)]
    return {
        "commit": sha or UNKNOWN_COMMIT,
        "dirty": None if status is None else any(not line.startswith("!!") for line in lines),
        "status": "\n".join(lines),
        "diff_sha256": None if diff is None else hashlib.sha256(diff.encode("utf-8")).hexdigest(),
    }


def _scratch(status_line: str) -> bool:
    """An untracked (??) or ignored (!!) path inside SCRATCH, or SCRATCH itself."""
    path = status_line[3:].strip('"')
    # git shows a wholly untracked folder as one line ("?? submission_runs/"): a folder above SCRATCH.
    return status_line[:2] in ("??", "!!") and any(
        path.startswith(s) or (path.endswith("/") and s.startswith(path)) for s in SCRATCH)


def _inside(status_path: str, run_dir: Path | None) -> bool:
    """Whether a `git status` path is the run folder, inside it, or a folder created for it."""
    if run_dir is None:
        return False
    try:
        run = run_dir.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:  # the run folder is outside the repository
        return False
    path = status_path.strip('"').rstrip("/")
    return path == run or path.startswith(run + "/") or run.startswith(path + "/")
