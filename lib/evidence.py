"""Writing evidence files: atomically, in UTF-8, through a briefly held file, and hashing them for the manifest."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from lib.contract import MANIFEST
from lib.redaction import redact

# On Windows a file another program holds open for a moment (the antivirus scanning it, the search indexer, OneDrive,
# an editor, a terminal tailing the log) cannot be replaced: os.replace raises PermissionError (WinError 5 or 32)
# until it lets go. A write waits through these pauses, about 6 s in all, then fails naming the file.
REPLACE_WAITS_S = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.0)
LIKELY_HOLDERS = ("an antivirus scan, the search indexer, OneDrive or another sync client, an editor or a viewer that "
                  "has it open, or a terminal following it (Get-Content -Wait)")


class HeldFile(PermissionError):
    """An evidence file stayed held by another program through every retry; the message names it and who may hold it."""


def write_text(path: Path, text: str) -> Path:
    """Write via a temporary file and an atomic rename, so a crash never leaves half a file.

    Secrets from the environment are redacted first: no evidence file ever holds a token.
    """
    text = redact(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name of our own rather than tempfile.mkstemp, whose files are private (0600): evidence
    # files get the user's usual permissions.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("x", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def replace(source: Path, target: Path, waits_s: tuple[float, ...] = REPLACE_WAITS_S) -> None:
    """os.replace, waiting through a target that another program holds for a moment (see REPLACE_WAITS_S)."""
    for wait in (*waits_s, None):
        try:
            os.replace(source, target)
            return
        except PermissionError as exc:
            if wait is None:
                raise HeldFile(exc.errno, f"cannot write {target.name} in {target.parent}: another program held it "
                               f"for {sum(waits_s):.0f} s ({exc.strerror}); likely {LIKELY_HOLDERS}; close it, or add "
                               "the run folder to the antivirus and indexer exclusions") from None
            time.sleep(wait)


def write_json(path: Path, obj: object) -> Path:
    return write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(run_dir: Path, final: bool = False) -> Path:
    """List every file of the run folder with its size and sha256 (the manifest itself excluded).

    `final`: lib.execute's last manifest, written after run.ipynb and run.html: every file is then
    checked, the executed notebook included (see lib/verify.py).
    """
    files = [
        {
            "path": p.relative_to(run_dir).as_posix(),
            "bytes": p.stat().st_size,
            "sha256": sha256_file(p),
        }
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    ]
    return write_json(run_dir / MANIFEST, {"algorithm": "sha256", "final": final, "files": files})
