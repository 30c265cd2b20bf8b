"""Who started the notebook's kernel, and the rules of an interactive run, whose cells may run again.

The kind of run follows from who started the kernel (DESIGN.md, "Kinds of run"):

- lib.execute claimed the folder before the kernel started and handed it the claim (M44_CLAIM_TOKEN): lib/run.py;
- the papermill command: the kernel's parent process runs papermill's command line, which papermill's own parser
  reads back (so the run knows the notebook papermill writes, and can keep it in the run folder);
- anything else that runs a kernel is an interactive run: JupyterLab and Notebook (JPY_SESSION_NAME), VS Code
  (`__vsc_ipynb_file__`), make lab's scratch copy (`__m44_lab__`), `jupyter console`, nbclient or nbval driven by
  a script, and papermill's Python API called from one;
- Run.start called outside any kernel (plain Python: a script, a test) is a one-shot "python" run.

An interactive run never writes into an official folder, is labelled interactive in claim.json, phases.json and
the summary, and its cells may run again, each with a defined meaning:
- the cell that calls Run.start starts the run over in the same folder (everything in it deleted; lib/run_folder.py);
- a phase run again first deletes its own evidence and that of every later phase, consolidation's included:
  the run is un-finished until its last cells run again;
- a parameter changed in the notebook is applied (config.json rewritten, the change recorded) when the phase that
  first reads it, or an earlier one, runs; otherwise the phase refuses to run;
- phases.json counts how often each phase ran, and the summary says so.
In a run of any other kind, a phase that already ran is refused before anything is written (lib/run.py).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lib.config import RunConfig, collect_parameters, parameter_names
from lib.contract import FINISH_FILES, LAB_MARKER, PHASE_ORDER, files_before
from lib.run_folder import remove_all_but

if TYPE_CHECKING:
    from lib.run import Run

# The phase that first reads each parameter; pre-flight reads every other one (in its checks, or in the
# model and data it prepares). A changed value applies when that phase, or an earlier one, runs again.
FIRST_READ_BY = {
    **dict.fromkeys(("max_steps", "gradient_accumulation_steps", "learning_rate", "lr_scheduler", "warmup_ratio",
                     "weight_decay", "max_grad_norm", "logging_steps", "telemetry_interval_s"), "training"),
    **dict.fromkeys(("eval_batch_size", "max_new_tokens"), "evaluation"),
}
PAPERMILL_PROGRAMS = ("papermill", "papermill.exe", "papermill-script.py")
HOW_TO_STEP_THROUGH = ("to run cells again, step through an interactive run instead: `make lab` (python -m lib.lab "
                       "start) opens a scratch copy of the notebook on a new folder")


@dataclass(frozen=True)
class Kernel:
    """Who runs the notebook's cells: the launcher claim.json records, and for an interactive run what showed it."""

    launcher: str  # "papermill", "interactive" or "python" ("lib.execute" is recognised by its claim, in lib/run.py)
    detected_by: str | None = None
    notebook: Path | None = None  # where papermill writes the executed notebook, when papermill started the kernel


def identify_kernel(namespace: dict) -> Kernel:
    """Who started the kernel whose globals are `namespace`; lib.execute's kernels are recognised before this."""
    signs = []
    if namespace.get(LAB_MARKER):
        signs.append("make lab's scratch copy")
    if os.environ.get("JPY_SESSION_NAME"):
        signs.append(f"a Jupyter server's session on {os.environ['JPY_SESSION_NAME']}")
    if namespace.get("__vsc_ipynb_file__"):
        signs.append(f"VS Code on {namespace['__vsc_ipynb_file__']}")
    if signs:
        return Kernel("interactive", "; ".join(signs))
    if not _in_a_kernel():
        return Kernel("python")
    parent = _parent_process()
    if parent is not None and (args := papermill_arguments(parent[0])) is not None:
        return Kernel("papermill", notebook=papermill_output(args, parent[1]))
    started_by = " ".join(Path(arg).name for arg in parent[0][:3]) if parent and parent[0] else "an unknown process"
    return Kernel("interactive", f"a kernel started by {started_by}, not by papermill's command or lib.execute")


def _in_a_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None and hasattr(get_ipython(), "kernel")


def _parent_process() -> tuple[list[str], Path] | None:
    """The command line and working folder of this process's parent, or None where the system will not say."""
    import psutil

    try:
        parent = psutil.Process().parent()
        return (parent.cmdline(), Path(parent.cwd())) if parent is not None else None
    except (psutil.Error, OSError):
        return None


def papermill_arguments(command: list[str]) -> list[str] | None:
    """The arguments after papermill in a command line (`papermill ...`, `python -m papermill ...`, papermill.exe
    on Windows); None when the command is not papermill's."""
    for index, arg in enumerate(command):
        if Path(arg).name.lower() in PAPERMILL_PROGRAMS or (arg == "papermill" and command[index - 1:index] == ["-m"]):
            return command[index + 1:]
    return None


def papermill_output(args: list[str], cwd: Path) -> Path | None:
    """The output notebook of a papermill command line, read by papermill's own parser; None if it names none
    on this machine's file system (stdout, a URL) or does not parse."""
    try:
        from papermill.cli import papermill as command

        output = command.make_context("papermill", list(args), resilient_parsing=True).params.get("output_path")
    except Exception:  # a papermill this code does not know: the folder check is skipped, nothing else changes
        return None
    if not output or output == "-" or "://" in output:
        return None
    path = Path(output)
    return path if path.is_absolute() else cwd / path


@dataclass
class Interactive:
    """How a person stepped through the run: what showed it, and what ran again or changed (in phases.json)."""

    detected_by: str
    starts: int = 1  # how often Run.start started the run in this folder; each start deletes the last
    runs: dict[str, int] = field(default_factory=dict)  # phase -> how often it ran since the last start
    parameter_changes: list[dict] = field(default_factory=list)  # {phase, run, changed: {name: [old, new]}}

    def before_phase(self, run: Run, name: str) -> None:
        """Before phase `name` runs (again): apply or refuse changed parameters, then delete its evidence and all after it."""
        if run.cfg is not None:  # invalid at the start: every phase is skipped, and Run.start's cell is the fix
            self._apply_changed_parameters(run, name)
        removed = remove_all_but(run.dir, files_before(name))
        earlier = PHASE_ORDER[:PHASE_ORDER.index(name)]
        run.phases = {key: record for key, record in run.phases.items() if key in earlier}
        run.outcome = None
        if name == "preflight":  # pre-flight snapshots the code the evidence comes from: the guard compares with it
            run.snapshot_repository()
        if removed:
            print(f"{name} runs again: deleted the evidence of {name} and every later phase ({', '.join(removed)}); "
                  "run the cells after it again to complete the run")
        run.save()

    def counted(self, name: str) -> None:
        self.runs[name] = self.runs.get(name, 0) + 1

    def before_consolidation(self, run: Run) -> None:
        """Remove what consolidation and the report wrote, and their records; say which changes were not applied."""
        for name in FINISH_FILES:
            (run.dir / name).unlink(missing_ok=True)
        run.phases = {key: record for key, record in run.phases.items() if key in PHASE_ORDER}
        run.outcome = None
        for name, (old, new) in changed_parameters(run).items():
            print(f"note: {name} changed in the notebook ({old!r} -> {new!r}) after the phases ran: the evidence "
                  f"is from {old!r}; run {FIRST_READ_BY.get(name, 'preflight')} again to apply it")

    def _apply_changed_parameters(self, run: Run, name: str) -> None:
        """Apply parameters changed in the notebook if phase `name` comes early enough to use them; else raise."""
        changed = changed_parameters(run)
        if not changed:
            return
        described = ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changed.items())
        if "run_dir" in changed:
            raise ValueError(f"parameter 'run_dir' changed ({described}): a run keeps its folder; run the first code "
                             "cell again (Run.start) to start the run in the new folder. Nothing was run or deleted.")
        order = PHASE_ORDER.index
        used = {key: FIRST_READ_BY.get(key, "preflight") for key in changed}
        used = {key: reader for key, reader in used.items() if order(reader) < order(name) and _ran(run, reader)}
        if used:
            first = min(used.values(), key=order)
            raise ValueError(
                f"parameter(s) changed after the phase that reads them ran: "
                f"{', '.join(f'{key} (read by {reader})' for key, reader in used.items())}; {name} would run on "
                f"evidence made with the old values. Run {first} again (its cell, then the ones after it) to apply "
                f"them, or set them back ({described}). Nothing was run or deleted.")
        try:
            cfg = RunConfig.from_parameters({**run.params, **{key: new for key, (_, new) in changed.items()}})
        except ValueError as exc:
            raise ValueError(f"{exc} (changed in the notebook: {described}; nothing was run or deleted)") from None
        run.params, run.cfg = cfg.to_dict(), cfg
        run.save_config()
        self.parameter_changes.append({
            "phase": name, "run": self.runs.get(name, 0) + 1,
            "changed": {key: [old, new] for key, (old, new) in changed.items()},
        })
        print(f"Parameters changed, applied from {name} on: {described} (config.json rewritten, sha256 {cfg.sha256()})")


def changed_parameters(run: Run) -> dict[str, tuple[Any, Any]]:
    """Parameters whose value in the notebook differs from the run's: name -> (the run's, the notebook's)."""
    live = collect_parameters(run.namespace)
    for name in sorted(set(live) - set(run.params)):  # a typo would otherwise change nothing, silently
        if close := difflib.get_close_matches(name, parameter_names(), n=1, cutoff=0.8):
            print(f"note: {name!r} is not a parameter and changes nothing; did you mean {close[0]!r}?")
    return {name: (run.params[name], run.namespace[name]) for name in run.params
            if name in run.namespace and run.namespace[name] != run.params[name]}


def _ran(run: Run, name: str) -> bool:
    record = run.phases.get(name)
    return record is not None and record.status in ("completed", "failed")
