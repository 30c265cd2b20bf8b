"""What the commands print reaches the terminal or the file it is redirected to, whatever text it holds; and an
exception said in words a person reads (`describe_exception`).

On Windows before Python 3.15, output redirected to a file or a pipe is encoded in the ANSI code page (cp1252 in
Western Europe): a prompt with an emoji or a Greek letter in it would end the command in UnicodeEncodeError. Every
entry point and worker calls `utf8_output()` first: stdout and stderr then write UTF-8, and anything UTF-8 cannot
hold (an unpaired surrogate) is written as its escape instead of failing. A Windows console is unaffected: Python
writes to it through the console's own Unicode API.
"""

from __future__ import annotations

import codecs
import re
import sys


# Exceptions whose message is a sentence for the person running the command (this project raises these, and the
# operating system's errors are worded for people): their class name adds nothing. Any other exception is a fault
# in code, and its class name is part of what it says (KeyError: 'x').
SPEAKING = (ValueError, RuntimeError, OSError, ImportError, FloatingPointError, MemoryError, TimeoutError)
# How torch's `record` writes an exception into an error file, and a traceback's last line: "Class: message".
CLASS_PREFIX = re.compile(r"^(?P<name>[A-Za-z_][\w.]*(?:Error|Exception|Failed|Interrupt|Warning)): (?P<message>.+)$", re.S)
SPEAKING_NAMES = {"ValueError", "RuntimeError", "OSError", "ImportError", "ModuleNotFoundError", "FloatingPointError",
                  "MemoryError", "TimeoutError", "FileNotFoundError", "FileExistsError", "PermissionError",
                  "OutOfMemoryError", "DataError", "HeldFile", "TrainingFailed", "EvaluationFailed"}


def describe_exception(exc: BaseException) -> str:
    """An exception as a person reads it: the message alone for the kinds that speak (see SPEAKING), an OS error as
    its own words and the file; else "Class: message", the class being what tells an internal fault apart."""
    if isinstance(exc, OSError) and exc.strerror:  # the file's name, not its folders: evidence names no user folder
        return exc.strerror + (f" ({str(exc.filename).replace(chr(92), '/').rsplit('/', 1)[-1]})" if exc.filename else "")
    message = str(exc).strip()
    if isinstance(exc, SPEAKING) and message:
        return message
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def without_class_name(text: str) -> str:
    """"RuntimeError: generation failed" -> "generation failed", for the speaking classes (an error file's text)."""
    match = CLASS_PREFIX.match(text)
    return match["message"] if match and match["name"].rsplit(".", 1)[-1] in SPEAKING_NAMES else text


def utf8_output() -> None:
    """Reconfigure stdout and stderr to UTF-8 with escapes for the unencodable (a no-op where they already are)."""
    for stream in (sys.stdout, sys.stderr):
        if not hasattr(stream, "reconfigure"):  # replaced by a caller (pytest's capture, a kernel's stream)
            continue
        if codecs.lookup(stream.encoding or "ascii").name != "utf-8" or stream.errors == "strict":
            stream.reconfigure(encoding="utf-8", errors="backslashreplace")
