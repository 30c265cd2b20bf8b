"""Keep Windows from sleeping while a run works: a sleeping machine can lose the GPU's CUDA context mid-training.

lib.execute holds the request for the whole run (Windows' SetThreadExecutionState with ES_SYSTEM_REQUIRED: the
system stays awake, the display may turn off) and releases it at the end; the state is handed to the kernel in
KEEP_AWAKE_ENV, and the environment snapshot records it. Elsewhere nothing is needed: the request is a no-op.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

KEEP_AWAKE_ENV = "M44_KEEP_AWAKE"
ES_CONTINUOUS, ES_SYSTEM_REQUIRED = 0x80000000, 0x00000001


@contextlib.contextmanager
def keep_awake() -> Iterator[str]:
    """Ask Windows to stay awake until the block ends; yields what was done, in words."""
    if sys.platform != "win32":
        yield "not needed (not Windows)"
        return
    import ctypes

    kernel32 = ctypes.windll.kernel32
    held = kernel32.SetThreadExecutionState(ES_CONTINUOUS | ES_SYSTEM_REQUIRED) != 0
    try:
        yield ("held by lib.execute for the run (SetThreadExecutionState: ES_CONTINUOUS | ES_SYSTEM_REQUIRED)" if held
               else "asked for, but Windows refused (SetThreadExecutionState returned 0): keep the machine awake")
    finally:
        kernel32.SetThreadExecutionState(ES_CONTINUOUS)  # back to the system's own idle rules
