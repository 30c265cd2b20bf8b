"""What the commands print reaches the terminal or the file it is redirected to, whatever text it holds.

On Windows before Python 3.15, output redirected to a file or a pipe is encoded in the ANSI code page (cp1252 in
Western Europe): a prompt with an emoji or a Greek letter in it would end the command in UnicodeEncodeError. Every
entry point and worker calls `utf8_output()` first: stdout and stderr then write UTF-8, and anything UTF-8 cannot
hold (an unpaired surrogate) is written as its escape instead of failing. A Windows console is unaffected: Python
writes to it through the console's own Unicode API.
"""

from __future__ import annotations

import codecs
import sys


def utf8_output() -> None:
    """Reconfigure stdout and stderr to UTF-8 with escapes for the unencodable (a no-op where they already are)."""
    for stream in (sys.stdout, sys.stderr):
        if not hasattr(stream, "reconfigure"):  # replaced by a caller (pytest's capture, a kernel's stream)
            continue
        if codecs.lookup(stream.encoding or "ascii").name != "utf-8" or stream.errors == "strict":
            stream.reconfigure(encoding="utf-8", errors="backslashreplace")
