"""The one shot is armed by a rehearsal: an official run starts only after one of its configuration passed here.

`python -m lib.execute --preflight-only` (make rehearse) runs pre-flight into a scratch folder under
build/rehearsals/ and, when every check passes, records the pass there (rehearsal.json). An official start
(`lib.execute`, or the notebook's Run.start cell under the papermill command) looks for a pass of the same
parameters (the run folder and this switch aside), from the same commit and tracked-file changes, on this
machine. Without one it is refused before anything is claimed or written: a setup error (no CUDA, no
credentials, a typo in a path) then costs a rehearsal, never the official folder. `require_rehearsal: false`
waives the rule; the waiver is in config.json and on the summary.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import time
from pathlib import Path

from lib.config import REPO_ROOT, RunConfig, default_parameters
from lib.evidence import write_json
from lib.repository import describe_repository

REHEARSALS = REPO_ROOT / "build" / "rehearsals"  # ignored by git: a rehearsal claims nothing
RECORD = "rehearsal.json"
NOT_COMPARED = ("run_dir", "require_rehearsal")  # a rehearsal stands for any official folder


def identity(cfg: RunConfig) -> dict:
    """What a rehearsal must share with the run it arms: parameters, code and machine."""
    repository = describe_repository()
    return {
        "config_sha256": dataclasses.replace(cfg, **{name: default_parameters()[name] for name in NOT_COMPARED}).sha256(),
        "commit": repository["commit"],
        "diff_sha256": repository["diff_sha256"],
        "host": socket.gethostname(),
    }


def record_pass(cfg: RunConfig, scratch: Path) -> Path:
    """Write the pass of a rehearsal of `cfg` (its target run_dir included) into its scratch folder."""
    return write_json(scratch / RECORD, {
        **identity(cfg), "passed_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "run_dir": cfg.run_dir, "command": command(cfg, preflight_only=True)})


def find_pass(cfg: RunConfig, root: Path = REHEARSALS) -> Path | None:
    """The newest recorded pass that arms `cfg`, or None."""
    wanted = identity(cfg)
    passes = []
    for path in root.glob(f"*/{RECORD}"):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if all(record.get(key) == value for key, value in wanted.items()):
            passes.append((record.get("passed_utc", ""), path))
    return max(passes)[1] if passes else None


def arming(cfg: RunConfig) -> str | None:
    """What armed an official run with `cfg`, in a line; None when nothing did."""
    if not cfg.require_rehearsal:
        return "rehearsal waived (require_rehearsal: false)"
    found = find_pass(cfg)
    return None if found is None else f"armed by the rehearsal in {found.parent.relative_to(REPO_ROOT).as_posix()}"


def check_armed(cfg: RunConfig) -> str:
    """What armed this official run, in a line; raises ValueError, with the command to run, when nothing did."""
    armed = arming(cfg)
    if armed is None:
        raise ValueError(
            f"the official run into {cfg.run_dir} starts only after a rehearsal of the same configuration passed on "
            f"this machine, from the same code, and none has: rehearse first (it claims nothing and writes only under "
            f"build/): {command(cfg, preflight_only=True)} . Then run this command again. "
            "(To start without one, add -p require_rehearsal=false; the waiver is recorded in the evidence.)")
    return armed


def command(cfg: RunConfig, preflight_only: bool = False) -> str:
    """The lib.execute command line for `cfg`: a -p for every parameter that differs from the official default."""
    defaults = default_parameters()
    changed = [f"-p {name}={_shell_word(value)}" for name, value in cfg.to_dict().items()
               if value != defaults[name] and name != "require_rehearsal"]
    return " ".join(["python -m lib.execute", *(["--preflight-only"] if preflight_only else []), *changed])


def _shell_word(value: object) -> str:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return text if text and all(c.isalnum() or c in "._-/:\\+" for c in text) else f'"{text}"'
