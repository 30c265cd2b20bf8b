"""The run folder: where it may be, how one launcher claims it atomically, and how a finished one is sealed.

A run folder is claimed by creating claim.json in it with O_EXCL (`open(..., "x")`): of two launchers
racing into the same folder exactly one creates the file; the other is refused before it writes anything.
`lib.execute` claims before papermill starts and hands the claim to the notebook (M44_CLAIM_TOKEN); the
raw papermill command claims in the notebook's Run.start cell. Run folders live under submission_runs/ or
outside the repository, so a run can never leave untracked weights in lib/ or data/.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import stat
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from lib.config import REPO_ROOT
from lib.contract import CLAIM, INTERACTIVE, NOTEBOOK, PHASES, STOP_REQUEST
from lib.evidence import read_json, write_json

RUNS = REPO_ROOT / "submission_runs"
# The official run's folders: submission_runs/m44_v1, m44_v2, ... (the design's "one shot" folders).
OFFICIAL = re.compile(r"m44_v\d+")
TOKEN_ENV = "M44_CLAIM_TOKEN"  # how lib.execute tells the notebook that the claim in the folder is its own
# papermill writes the executed notebook into the folder before the first cell runs, and the official
# folder is committed empty (papermill needs it to exist): neither makes a folder used.
NOT_A_RUN = {NOTEBOOK, ".gitkeep"}


@dataclass(frozen=True)
class Claim:
    """Who claimed a run folder: claim.json, the first file of every run."""

    token: str
    launcher: str  # "lib.execute"; the notebook claimed it: "papermill", "interactive" or "python" (lib/interactive.py)
    pid: int
    host: str
    started_utc: str


def is_official(run_dir: Path) -> bool:
    """Whether `run_dir` is an official one-shot folder, submission_runs/m44_v<N>."""
    return run_dir.resolve().parent == RUNS.resolve() and OFFICIAL.fullmatch(run_dir.name) is not None


def check_location(run_dir: Path) -> None:
    """Refuse a run folder inside the repository anywhere but under submission_runs/."""
    resolved, repo = run_dir.resolve(), REPO_ROOT.resolve()
    if resolved == repo or repo in resolved.parents:
        if not (resolved.parent == RUNS.resolve() or RUNS.resolve() in resolved.parents):
            raise ValueError(
                f"parameter 'run_dir': {run_dir} is inside the repository but not under submission_runs/; "
                "a run folder goes under submission_runs/ (or anywhere outside the repository), so that no "
                "run leaves model weights among the project's files"
            )
        if resolved == RUNS.resolve():
            raise ValueError("parameter 'run_dir': submission_runs/ itself is not a run folder; name a folder in it")


def refuse_used_folder(run_dir: Path) -> None:
    """Raise FileExistsError if `run_dir` already holds (part of) a run."""
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise FileExistsError(f"run_dir {run_dir} exists and is not a folder")
    leftovers = sorted(p.name for p in run_dir.iterdir() if p.name not in NOT_A_RUN)
    if leftovers:
        raise FileExistsError(
            f"run_dir {run_dir} already holds a run ({', '.join(leftovers[:5])}); "
            "runs are never repeated into the same folder: choose a new run_dir"
        )


def claim(run_dir: Path, launcher: str) -> Claim:
    """Create the run folder if needed and claim it; raise with a message naming the folder and the fix.

    Checks the location and that the folder holds no run, then creates claim.json exclusively: the
    check and the creation of the folder are not atomic, the claim is.
    """
    try:
        check_location(run_dir)
        refuse_used_folder(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise
    except OSError as exc:  # a read-only place, a name too long for the file system, a full disk
        raise OSError(exc.errno, f"cannot create the run folder {run_dir}: {exc.strerror}; {_fix(exc)}") from None
    record = Claim(token=secrets.token_hex(16), launcher=launcher, pid=os.getpid(), host=socket.gethostname(),
                   started_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    try:
        with (run_dir / CLAIM).open("x", encoding="utf-8", newline="\n") as f:
            f.write(json.dumps(asdict(record), indent=2) + "\n")
    except FileExistsError:
        other = read_claim(run_dir)
        who = f" by {other.launcher} (pid {other.pid} on {other.host}, {other.started_utc})" if other else ""
        raise FileExistsError(
            f"run_dir {run_dir} was claimed{who} at the same moment; runs are never repeated into the same "
            "folder: choose a new run_dir") from None
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write in the run folder {run_dir}: {exc.strerror}; {_fix(exc)}") from None
    return record


def _fix(exc: OSError) -> str:
    if exc.errno == 36 or "too long" in (exc.strerror or "").lower():  # ENAMETOOLONG
        return "choose a shorter run_dir"
    return "choose a run_dir in a folder you can write to, on a drive with free space"


def read_claim(run_dir: Path) -> Claim | None:
    """The folder's claim, or None when there is none (or it cannot be read)."""
    try:
        return Claim(**json.loads((run_dir / CLAIM).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def owns(run_dir: Path, token: str | None) -> bool:
    """Whether the folder's claim is the one `token` names (lib.execute claimed it for this notebook)."""
    found = read_claim(run_dir)
    return token is not None and found is not None and secrets.compare_digest(found.token, token)


def request_stop(run_dir: Path, signal_name: str, to: str) -> None:
    """stop_request.json: the signal that stopped the folder's launcher `to`, and when; the phases read it."""
    write_json(run_dir / STOP_REQUEST, {"signal": signal_name, "to": to, "pid": os.getpid(),
                                        "received_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


def stop_cause(run_dir: Path) -> str | None:
    """The cause every record of a stopped run gives, from stop_request.json; None when no stop was requested."""
    try:
        stop = read_json(run_dir / STOP_REQUEST)
    except FileNotFoundError:
        return None
    return f"stopped by {stop['signal']} sent to {stop['to']} (pid {stop['pid']}, {stop['received_utc']})"


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (psutil: the same answer on Windows and POSIX)."""
    import psutil

    return psutil.pid_exists(pid)


def seal(run_dir: Path) -> None:
    """Make a finished run folder read-only, where the platform enforces it, so later commands fail before writing.

    Files become read-only (on Windows the read-only attribute), then folders lose their write bit
    (POSIX only: Windows ignores it on folders). Root ignores both on POSIX; the manifest and the
    verifier still catch a rewritten file there.
    """
    for path in sorted(run_dir.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_file():
            path.chmod(stat.S_IREAD | stat.S_IRGRP | stat.S_IROTH)
    for path in sorted([run_dir, *(p for p in run_dir.rglob("*") if p.is_dir())], key=lambda p: len(p.parts),
                       reverse=True):
        path.chmod(stat.S_IREAD | stat.S_IEXEC | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)


def claim_interactive(run_dir: Path, detected_by: str) -> tuple[Claim, int]:
    """Claim `run_dir` for an interactive run, and how often it has been started there.

    A folder an interactive kernel claimed earlier (this kernel: Run.start's cell run again; or a kernel that no
    longer runs: restarted) is started over: everything in it is deleted. Refused: an official folder, a folder
    of another kind of run, one that a running kernel uses.
    """
    if is_official(run_dir):
        raise ValueError(
            f"parameter 'run_dir': {run_dir} is an official one-shot folder, and this is an interactive run "
            f"({detected_by}), which never writes there. Step through a scratch copy instead: make lab "
            "(python -m lib.lab start) gives it a new submission_runs/interactive-... folder; the official run is "
            "python -m lib.execute")
    earlier = read_claim(run_dir)
    if earlier is None or earlier.launcher != INTERACTIVE:
        return claim(run_dir, INTERACTIVE), 1  # a folder holding another kind of run is refused here
    if earlier.host != socket.gethostname():
        raise FileExistsError(f"run_dir {run_dir} belongs to an interactive run on {earlier.host} (pid {earlier.pid}, "
                              f"started {earlier.started_utc}); choose a new run_dir")
    if earlier.pid != os.getpid() and process_alive(earlier.pid):
        raise FileExistsError(
            f"run_dir {run_dir} is in use by another running kernel (pid {earlier.pid}, started {earlier.started_utc}); "
            "shut that kernel down (Kernel > Shut Down Kernel) and run this cell again, or choose a new run_dir")
    try:
        starts = json.loads((run_dir / PHASES).read_text(encoding="utf-8"))["interactive"]["starts"] + 1
    except (OSError, ValueError, KeyError, TypeError):  # the earlier start stopped before its first record
        starts = 2
    removed = remove_all_but(run_dir, frozenset())
    print(f"Starting the run over in {run_dir} (start {starts}): deleted the earlier start's "
          f"{len(removed)} files and folders")
    return claim(run_dir, INTERACTIVE), starts


def remove_all_but(folder: Path, keep: frozenset[str]) -> list[str]:
    """Delete every file and folder at the top of `folder` whose name is not in `keep`; their names, folders with a /."""
    removed = []
    for path in sorted(folder.iterdir()):
        if path.name in keep:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
            removed.append(f"{path.name}/")
        else:
            path.unlink()
            removed.append(path.name)
    return removed
