"""Workers the kernel outlives: one process, or one per device through torchrun; how each one ended.

    python -m lib.training_worker RUN_DIR ...                                      num_processes: 1
    python -m torch.distributed.run --standalone --nproc-per-node N \\
        --tee 3 --log-dir <temporary> -m lib.training_worker RUN_DIR ...           num_processes: N > 1

The kernel prints every line a worker writes; torchrun prefixes each rank's lines with `[rankR]: `.
A worker exits 0 when done, 1 after an exception (its traceback printed and, under torchrun, recorded
in the rank's error file by torch's `record`), 130 when interrupted (Ctrl-C, SIGTERM); a crash ends it
with a signal. torchrun turns any of these into its own exit code 1 and prints a summary of the
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

from lib.config import REPO_ROOT

INTERRUPTED_EXIT = 130  # a worker's exit code when stopped by Ctrl-C or SIGTERM (the shell convention)
STOP_GRACE_S = 60  # how long an interrupted worker gets to write its metrics; torchrun's own grace is 30 s
TAIL_LINES = 30  # the output lines a failure message quotes
# torchrun's template for the prefix of each worker line; its default names the local rank and the role.
RANK_PREFIX = "[rank${rank}]: "
# A collective that lost a peer fails in every surviving rank: with one of torch.distributed's errors,
# or (gloo's TCP transport) with a RuntimeError saying the connection closed.
PEER_LOST_ERRORS = ("DistError", "DistBackendError", "DistNetworkError", "DistStoreError")
PEER_LOST_TEXT = ("Connection closed by peer", "Connection reset by peer")


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
        if self.num_processes == 1:
            return recorded or describe_exit(self.returncode, self.what)
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


def run_worker(module: str, args: list[str], num_processes: int, what: str) -> Ended:
    """Start the worker, print its output as it comes, and wait; Ctrl-C stops every process of it and re-raises."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8", "PYTHONDONTWRITEBYTECODE": "1",
           "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE": RANK_PREFIX}
    if sys.platform == "win32":
        env["USE_LIBUV"] = "0"  # Windows builds of torch have no libuv, which torchrun's store uses by default
    # Outside the run folder: torchrun's per-rank logs duplicate what the notebook prints, and the error
    # files are read back into the evidence below.
    with tempfile.TemporaryDirectory(prefix="m44-torchrun-", ignore_cleanup_errors=True) as log_dir:
        worker = subprocess.Popen(
            worker_command(module, args, num_processes, Path(log_dir)), cwd=REPO_ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8", errors="replace",
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
        failures = read_failures("".join(summary), what) if num_processes > 1 and returncode != 0 else ()
    return Ended(returncode, "".join(tail), num_processes, what, failures)


def stop(worker: subprocess.Popen) -> None:
    """SIGTERM lets the worker (or torchrun, which passes it on to every rank) write its metrics; after the
    grace period, whatever is left of the process tree is killed. On Windows terminate() ends it at once."""
    children = _children(worker.pid)  # before terminating: an orphaned rank can no longer be found from here
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
    if returncode < 0:  # POSIX: killed by a signal the process could not handle
        return f"{what} killed by {signal.Signals(-returncode).name} (out-of-memory killer, segfault or kill)"
    if returncode == INTERRUPTED_EXIT:
        return f"{what} interrupted (Ctrl-C or SIGTERM)"
    return f"{what} exited with code {returncode} without recording a cause"


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
    error_file = Path(match["error_file"].strip())
    if error_file.is_file():  # written by torch's `record` in the worker: the exception and its traceback
        message = json.loads(error_file.read_text(encoding="utf-8"))["message"]
        if isinstance(message, dict):
            text, trace = message["message"], message.get("extraInfo", {}).get("py_callstack", "")
            return RankFailure(rank, exitcode, text.splitlines()[0] if text else f"exit code {exitcode}", trace)
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

    An exception goes through torch's `record`, which writes it to the error file torchrun gave this
    rank (nothing without torchrun), and is printed; a polite stop (SIGTERM) ends it as Ctrl-C does.
    """
    from torch.distributed.elastic.multiprocessing.errors import record  # the worker's import, not the kernel's

    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        record(body)()
    except KeyboardInterrupt:
        return INTERRUPTED_EXIT
    except Exception:
        traceback.print_exc()
        return 1
    return 0


def _sigterm_as_interrupt(signum, frame):
    # Once: torchrun or a scheduler may send the same signal again while the metrics are being written.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")
