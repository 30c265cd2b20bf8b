"""Workers the kernel outlives: one process, or one per device through torchrun; how each one ended.

    python -m lib.training_worker RUN_DIR ...                                      num_processes: 1
    python -m torch.distributed.run --standalone --nproc-per-node N \\
        --tee 3 --log-dir <temporary> -m lib.training_worker RUN_DIR ...           num_processes: N > 1

The kernel prints every line a worker writes; torchrun prefixes each rank's lines with `[rankR]: `.
A worker exits 0 when done, 1 after an exception (its traceback printed and recorded in an error file by
torch's `record`: torchrun names one per rank, run_worker one for a single process), 130 when interrupted
(Ctrl-C, SIGTERM, Ctrl-Break); a crash ends it with a signal (POSIX) or an NTSTATUS code (Windows). torchrun turns any of these into its own exit code 1 and prints a summary of the
failed ranks; `Ended.failures` reads that summary and the ranks' error files back into causes, and
puts the rank whose failure started it all first: a rank torchrun stopped because another had
failed (exit 130), or one whose collective lost its peer, is a consequence, not the cause.
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psutil

from lib.config import REPO_ROOT, RunConfig
from lib.console import without_class_name

INTERRUPTED_EXIT = 130  # a worker's exit code when stopped by Ctrl-C or SIGTERM (the shell convention)
STOP_GRACE_S = 60  # how long an interrupted worker gets to write its metrics; torchrun's own grace is 30 s
TAIL_LINES = 30  # the output lines a failure message quotes
# torchrun's template for the prefix of each worker line; its default names the local rank and the role.
RANK_PREFIX = "[rank${rank}]: "
# A collective that lost a peer fails in every surviving rank: with one of torch.distributed's errors,
# or (gloo's TCP transport) with a RuntimeError saying the connection closed.
PEER_LOST_ERRORS = ("DistError", "DistBackendError", "DistNetworkError", "DistStoreError")
PEER_LOST_TEXT = ("Connection closed by peer", "Connection reset by peer")
WINDOWS = sys.platform == "win32"
# The signals that ask a worker to stop, as Ctrl-C does: SIGTERM (a scheduler, torchrun, lib.execute) and on Windows
# SIGBREAK, which Python raises for Ctrl-Break and for a console being closed.
STOP_SIGNALS = ("SIGTERM", "SIGBREAK")
# What makes a CPU run's numbers the same on every x86-64 machine (parameter cpu_numerics: portable). One thread:
# torch splits its reductions (a norm's weight gradient over the tokens, say) by the thread count, so two threads
# round differently from one. torch's AVX2 kernels (ATEN_CPU_CAPABILITY), so that an AVX-512 or AMX machine does
# not accumulate in another order. MKL's compatible path (MKL_CBWR=COMPATIBLE, SSE2), the mode Intel documents for
# the same results on Intel and other CPUs: with MKL_CBWR=AVX2 the demo ended at another loss and format rate on an
# Intel Xeon (AMX) than on an AMD EPYC (docs/ARCHITECTURE.md). The price: training about 1.7x slower.
PORTABLE_CPU = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE"}
# Windows' exit codes for a process that crashed or was stopped (NTSTATUS values), in words.
WINDOWS_EXITS = {
    0xC0000005: "an access violation (a crash in native code)",
    0xC000013A: "Ctrl-C or the console closed (STATUS_CONTROL_C_EXIT)",
    0xC0000409: "a stack buffer overrun (a crash in native code)",
    0xC00000FD: "a stack overflow",
    0xC0000017: "running out of memory (STATUS_NO_MEMORY)",
    0xC0000374: "a corrupted heap",
    0xC000001D: "an illegal instruction (a build for another CPU)",
    0xC0000094: "an integer division by zero in native code",
    0xE06D7363: "an uncaught C++ exception in native code",
}


def backend(device: str) -> str:
    """The process group's backend: NCCL between GPUs, except on Windows (no NCCL build); gloo on the CPU."""
    return "nccl" if device == "cuda" and sys.platform != "win32" else "gloo"


def process_group_backend(device: str, num_processes: int) -> str | None:
    """The backend to ask Accelerate for; None for one process, where it refuses any (there is no group)."""
    return backend(device) if num_processes > 1 else None


@dataclass(frozen=True)
class RankFailure:
    """One failed rank, as torchrun reported it."""

    rank: int
    exitcode: int
    cause: str  # one line
    traceback: str = ""  # what the rank recorded in its error file, if anything

    @property
    def consequence(self) -> bool:
        """Stopped because another rank failed: torchrun's SIGTERM (exit 130), or a collective whose peer died."""
        return (self.exitcode == INTERRUPTED_EXIT or self.cause.split(":")[0] in PEER_LOST_ERRORS
                or any(text in self.cause for text in PEER_LOST_TEXT))


@dataclass(frozen=True)
class Ended:
    """How a worker ended: its exit code, its last output lines, and under torchrun the failed ranks."""

    returncode: int
    tail: str
    num_processes: int
    what: str  # "training process": how causes name the worker
    failures: tuple[RankFailure, ...] = ()  # the root cause first

    def cause(self, recorded: str | None = None) -> str:
        """One line: the failed rank and why; `recorded` is what the worker itself wrote down (rank 0 under torchrun)."""
        if self.num_processes == 1:  # what the worker wrote down, else what `record` saw, else the exit code
            return recorded or (self.failures[0].cause if self.failures else describe_exit(self.returncode, self.what))
        if self.failures:
            root = self.failures[0]
            return f"rank {root.rank} of {self.num_processes}: {root.cause}"
        # No rank failed on its own: torchrun itself was stopped (Ctrl-C, SIGTERM) and stopped every rank.
        return f"{recorded or describe_exit(self.returncode, 'torchrun')} (all {self.num_processes} processes stopped)"

    def details(self) -> str:
        """The failed ranks, one line each, and the root cause's traceback: for the failure message."""
        lines = [f"rank {f.rank}: exit code {f.exitcode}, {f.cause}" for f in self.failures]
        if self.failures and self.failures[0].traceback:
            lines += [f"rank {self.failures[0].rank}'s traceback:", self.failures[0].traceback.rstrip()]
        return "\n".join(lines)


def worker_environment(cfg: RunConfig) -> dict[str, str]:
    """What a worker's environment adds for this run: the portable CPU numerics when the run asks for them."""
    return dict(PORTABLE_CPU) if cfg.device == "cpu" and cfg.cpu_numerics == "portable" else {}


def worker_command(module: str, args: list[str], num_processes: int, log_dir: Path) -> list[str]:
    """The command line: the module itself, or torchrun starting it once per process."""
    if num_processes == 1:
        return [sys.executable, "-B", "-m", module, *args]
    return [
        sys.executable, "-B", "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={num_processes}",
        # Every rank's stdout and stderr through a log file back to this console, prefixed with the rank.
        "--tee=3", f"--log-dir={log_dir}",
        "-m", module, *args,
    ]


def run_worker(module: str, args: list[str], num_processes: int, what: str, extra_env: dict | None = None) -> Ended:
    """Start the worker, print its output as it comes, and wait; Ctrl-C stops every process of it and re-raises.

    The worker runs in a process group of its own: a console's Ctrl-C reaches the kernel's handler, which then
    asks the worker to stop (`stop`), instead of killing it mid-write.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8", "PYTHONDONTWRITEBYTECODE": "1",
           "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE": RANK_PREFIX, **(extra_env or {})}
    if WINDOWS:
        env["USE_LIBUV"] = "0"  # Windows builds of torch have no libuv, which torchrun's store uses by default
    # Outside the run folder: torchrun's per-rank logs duplicate what the notebook prints, and the error
    # files are read back into the evidence below.
    with tempfile.TemporaryDirectory(prefix="m44-torchrun-", ignore_cleanup_errors=True) as log_dir:
        error_file = Path(log_dir) / "error.json"
        if num_processes == 1:  # torch's `record` writes a single worker's exception here, as torchrun's ranks do
            env["TORCHELASTIC_ERROR_FILE"] = str(error_file)
        group = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if WINDOWS else {"start_new_session": True}
        worker = subprocess.Popen(
            worker_command(module, args, num_processes, Path(log_dir)), cwd=REPO_ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8", errors="replace", **group,
        )
        tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        # torchrun's failure summary comes last, but a rank's traceback in it can run to many lines.
        summary: collections.deque[str] = collections.deque(maxlen=2000)
        try:
            for line in worker.stdout:
                print(line, end="", flush=True)
                tail.append(line)
                summary.append(line)
            returncode = worker.wait()
        except KeyboardInterrupt:  # Ctrl-C / "interrupt kernel": stop the worker cleanly, then let the caller record it
            stop(worker)
            raise
        failures = ()
        if returncode != 0:
            failures = (read_failures("".join(summary), what) if num_processes > 1
                        else tuple(f for f in [read_error_file(error_file, 0, returncode)] if f))
    return Ended(returncode, "".join(tail), num_processes, what, failures)


def stop(worker: subprocess.Popen) -> None:
    """Ask the worker to stop, as Ctrl-C would, so it writes its metrics; after the grace period, kill what is left.

    SIGTERM on POSIX (torchrun passes it on to every rank); Ctrl-Break to the worker's process group on Windows,
    where terminate() would end it at once without running a handler.
    """
    children = _children(worker.pid)  # before asking: an orphaned rank can no longer be found from here
    if WINDOWS:
        worker.send_signal(signal.CTRL_BREAK_EVENT)
    else:
        worker.terminate()
    try:
        worker.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:  # ended in time, as it should
            pass


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def describe_exit(returncode: int, what: str) -> str:
    """A worker's exit code in words: a POSIX signal, a Windows crash code, or the interrupt convention."""
    if returncode < 0:  # POSIX: killed by a signal the process could not handle
        return f"{what} killed by {signal.Signals(-returncode).name} (out-of-memory killer, segfault or kill)"
    if returncode == INTERRUPTED_EXIT:
        return f"{what} interrupted (Ctrl-C, Ctrl-Break or SIGTERM)"
    if (code := returncode & 0xFFFFFFFF) in WINDOWS_EXITS:  # Windows reports NTSTATUS codes, as large numbers
        return f"{what} ended by {WINDOWS_EXITS[code]} (exit code 0x{code:08X})"
    return f"{what} exited with code {returncode} without recording a cause"


def read_error_file(path: Path, rank: int, exitcode: int) -> RankFailure | None:
    """The exception torch's `record` wrote for a worker (message and traceback), or None when it wrote none."""
    if not path.is_file():
        return None
    message = json.loads(path.read_text(encoding="utf-8"))["message"]
    if not isinstance(message, dict):
        return None
    text, trace = message["message"], message.get("extraInfo", {}).get("py_callstack", "")
    return RankFailure(rank, exitcode, without_class_name(text.split("\n")[0]) if text else f"exit code {exitcode}",
                       trace)


# One failed rank in torchrun's summary (torch.distributed.elastic.multiprocessing.errors.ChildFailedError).
_FAILURE = re.compile(
    r"^\s*rank\s*: (?P<rank>\d+) \(local_rank: \d+\)\n"
    r"\s*exitcode\s*: (?P<exitcode>-?\d+) \(pid: \d+\).*\n"
    r"\s*error_file: (?P<error_file>.*)$",
    re.MULTILINE,
)
_ROOT_CAUSE = "Root Cause (first observed failure):"


def read_failures(output: str, what: str) -> tuple[RankFailure, ...]:
    """torchrun's failed ranks from its summary, the rank whose failure came first in front.

    torchrun orders failures by the second they were noticed, and a rank it stopped because of another
    can tie with it: a failure that is the consequence of another goes behind every one that is not.
    """
    if _ROOT_CAUSE not in output:
        return ()
    others, root = output.rsplit(_ROOT_CAUSE, 1)
    # The root cause first, then the others in torchrun's order (the summary lists the root last).
    matches = [*_FAILURE.finditer(root)][:1] + [*_FAILURE.finditer(others.rsplit("Failures:", 1)[-1])]
    failures = [_failure(m, what) for m in matches]
    return tuple(sorted(failures, key=lambda f: f.consequence))  # stable: torchrun's order within each kind


def _failure(match: re.Match, what: str) -> RankFailure:
    rank, exitcode = int(match["rank"]), int(match["exitcode"])
    if recorded := read_error_file(Path(match["error_file"].strip()), rank, exitcode):
        return recorded
    if exitcode == INTERRUPTED_EXIT:
        return RankFailure(rank, exitcode, "interrupted by SIGTERM (stopped by torchrun, or Ctrl-C)")
    return RankFailure(rank, exitcode, describe_exit(exitcode, what))


# --- the worker's side ------------------------------------------------------------------------------


def join_processes(device: str, num_processes: int):
    """This worker's accelerate.PartialState: rank, world size and device.

    Under torchrun it joins the process group and selects this rank's GPU, before any weights load
    (the Trainer's arguments then find the group in place). It refuses a group of another size than
    the run's: a worker started by hand, outside lib.training, would train a different run.
    """
    from accelerate import PartialState

    processes = PartialState(cpu=device == "cpu", backend=process_group_backend(device, num_processes))
    if processes.num_processes != num_processes:
        raise RuntimeError(
            f"the run's num_processes is {num_processes}, but this worker is one of {processes.num_processes} "
            "processes: start it through the notebook (lib.training), which starts torchrun when needed"
        )
    return processes


def leave_process_group(processes) -> None:
    """End a rank that has done its work: wait for every rank, close the group, and exit at once.

    Exiting through the interpreter's teardown can deadlock after a gloo group is closed: freeing the DDP
    reducer locks the group while gloo's worker thread, releasing its last collective's tensors, waits
    for the GIL the main thread holds (seen in CI, a rank idle for good in ~ProcessGroupGloo). Every file
    this rank owes is written and closed by now, so the process ends here with exit code 0, flushed,
    and skips that teardown.
    """
    processes.wait_for_everyone()
    processes.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def worker_main(body: Callable[[], object]) -> int:
    """Run a worker's body under the exit protocol above and return its exit code.

    An exception goes through torch's `record`, which writes it to the error file run_worker or torchrun named,
    and is printed; a polite stop (SIGTERM, and on Windows Ctrl-Break or the console closing) ends it as Ctrl-C does.
    """
    from torch.distributed.elastic.multiprocessing.errors import record  # the worker's import, not the kernel's

    for name in STOP_SIGNALS:
        if hasattr(signal, name):  # SIGBREAK exists on Windows only
            signal.signal(getattr(signal, name), _stop_as_interrupt)
    try:
        record(body)()
    except KeyboardInterrupt:
        return INTERRUPTED_EXIT
    except Exception:
        traceback.print_exc()
        return 1
    return 0


def _stop_as_interrupt(signum, frame):
    # Once: torchrun or a scheduler may send the same signal again while the metrics are being written.
    signal.signal(signum, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")
