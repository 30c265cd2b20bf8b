"""Writing evidence files: atomically, in UTF-8, and hashing them for the manifest."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from lib.contract import MANIFEST
from lib.redaction import redact


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
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


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
