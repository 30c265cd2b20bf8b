"""The main command: execute the notebook into a new run folder, then render its HTML report.

    python -m lib.execute                                   # the official contract, submission_runs/m44_v1
    python -m lib.execute --params params/embedded.yaml     # a profile: a new <profile>-<time> folder each call
    python -m lib.execute -p model_name=D:/models/gemma-2b -p max_steps=300     # any parameter, validated
    python -m lib.execute --preflight-only                  # rehearse: pre-flight only, nothing claimed

It chains papermill's and nbconvert's own Python APIs so that one command leaves the whole evidence
folder; the papermill CLI command in the README does the same in two steps. Beyond those two, it:
validates every parameter before anything is written; claims the run folder atomically; forwards
Ctrl-C/SIGTERM to the kernel as Jupyter's "interrupt kernel", so the run documents itself; consolidates
from the folder's files if the notebook never got there (the kernel died, or was stopped between
phases); documents a failure to write the report as the run's failure; hashes run.ipynb and run.html
into the final manifest; verifies the folder; and makes it read-only.

Exit status: 0 completed; 1 the run failed (documented) or does not verify; 2 refused before anything
was written (a bad parameter, a used or misplaced folder); 128 + the signal's number when stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from jupyter_core.utils import run_sync

from lib import run_folder
from lib.config import REPO_ROOT, display_path, load_config, parse_override, read_profile, repo_relative, resolve_path
from lib.console import describe_exception, utf8_output
from lib.contract import FAILURE_ANALYSIS, NOTEBOOK as NOTEBOOK_NAME, SUMMARY, SUMMARY_FACTS
from lib.evidence import read_json, write_manifest, write_text
from lib.keep_awake import KEEP_AWAKE_ENV, keep_awake
from lib.launcher import STOP_GRACE_S
from lib.progress import Progress
from lib.rehearsal import RECORD, REHEARSALS, check_armed, record_pass
from lib.summary import completed, next_step, outcome_line, status_label
from lib.verify import verify

NOTEBOOK = REPO_ROOT / "notebooks" / "m44.ipynb"
RUNS = run_folder.RUNS
REPORT_TEMPLATE = Path(__file__).parent / "report_template"
STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGBREAK")  # SIGBREAK: Ctrl-Break in a Windows console
# After a stop, the notebook ends within the worker's own grace plus the time to document the run; a kernel that
# outlives this lost the interrupted cell's reply or never saw the interrupt (Stop).
KERNEL_GRACE_S = STOP_GRACE_S + 60


def new_run_dir(profile: str, root: Path = RUNS) -> Path:
    """<root>/<profile>-<UTC time>, never an existing folder."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    candidate, n = root / f"{profile}-{stamp}", 1
    while candidate.exists():
        n += 1
        candidate = root / f"{profile}-{stamp}-{n}"
    return candidate


def render_html(notebook: Path) -> Path:
    """The report: the executed notebook with its code hidden, in one file that opens offline."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        extra_template_basedirs=[str(REPORT_TEMPLATE)], template_name="m44",
        exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True,
    )
    facts_file = notebook.parent / SUMMARY_FACTS
    title = (f"M44 {status_label(read_json(facts_file))}: {notebook.parent.name}" if facts_file.is_file()
             else f"M44 run: {notebook.parent.name}")
    body, _ = exporter.from_filename(str(notebook), resources={"metadata": {"name": title}})  # the page's <title>
    return write_text(notebook.with_suffix(".html"), body)


class Stop:
    """Ctrl-C, SIGTERM (and Ctrl-Break on Windows) to the launcher: interrupt the kernel, as Jupyter does.

    The kernel gets a KeyboardInterrupt in the running cell (jupyter_client signals the kernel's process
    group on POSIX, so the training worker gets it too; on Windows it sets the kernel's interrupt event);
    the phase guard records it and the notebook goes on to document the run. Every further signal is
    forwarded again. The first is written to stop_request.json, so the evidence names it, and a phase
    that has not started reads it there and does not start: that stops a run whose signal came before
    its kernel was up, or fell between two cells, where the kernel ignores it. Installed before the run
    folder is claimed, so no signal can fall between the claim and the run. Once the run has written its
    facts (M44.3), nothing is left to stop: a signal is answered, and the evidence completed as it is.

    A kernel that has not ended the run KERNEL_GRACE_S after the first signal is killed, and the run is
    documented from its folder. ipykernel loses a cell's reply when the interrupt lands after the cell's
    code but before the reply is sent (while it flushes the cell's output), and code blocked in a driver
    or on a network drive may never see the interrupt: without this the launcher would wait for good.
    """

    def __init__(self) -> None:
        self.run_dir: Path | None = None  # set once the folder is claimed: only then is it ours to write
        self.km = None  # the kernel manager, once papermill's client has created it
        self.received: signal.Signals | None = None
        self.finishing = False  # the notebook is done; the launcher completes and seals the evidence
        self.deadline: threading.Timer | None = None  # kills a kernel that outlives KERNEL_GRACE_S after a stop
        self.killed_kernel = False

    def __enter__(self) -> Stop:
        self.previous = {}
        for name in STOP_SIGNALS:
            if hasattr(signal, name):
                self.previous[name] = signal.signal(getattr(signal, name), self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for name, handler in self.previous.items():
            signal.signal(getattr(signal, name), handler)
        self.finished()

    def finished(self) -> None:
        """The notebook has returned: from here on a signal is answered, not obeyed, and no kernel is left to kill."""
        self.finishing = True
        if self.deadline is not None:
            self.deadline.cancel()

    def claimed(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        if self.received:
            self._write_request()

    def consolidated(self) -> bool:
        """Whether the run has written its facts: its phases are over, and an interrupt could only break its report."""
        return self.run_dir is not None and (self.run_dir / SUMMARY_FACTS).exists()

    def manager_class(self) -> type:
        """jupyter_client's kernel manager, handing itself to this Stop when nbclient creates it (nbclient owns it).

        The asynchronous one, nbclient's default: with it nbclient notices a kernel that died in a cell (the
        blocking client's wait for the cell's reply would hold nbclient's event loop, and with it that check).
        """
        from jupyter_client.manager import AsyncKernelManager

        stop = self

        class Manager(AsyncKernelManager):
            def __init__(self, **kwargs):
                super().__init__(**kwargs)
                stop.km = self

        return Manager

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.finishing or self.consolidated():
            print(f"\nlib.execute: {name} received after the run's phases ended: completing the evidence first",
                  flush=True)
            return
        if self.received is None:
            self.received = signal.Signals(signum)
            if self.run_dir is not None:
                self._write_request()
        print(f"\nlib.execute: {name} received: interrupting the run, which documents itself and stops", flush=True)
        if self.km is not None and self.km.has_kernel:
            run_sync(self.km.interrupt_kernel)()  # from inside nbclient's event loop: jupyter_core runs it beside
        if self.deadline is None:
            self.deadline = threading.Timer(KERNEL_GRACE_S, self._kill_kernel)
            self.deadline.daemon = True
            self.deadline.start()

    def _kill_kernel(self) -> None:
        if self.finishing or self.km is None or not self.km.has_kernel:
            return
        print(f"lib.execute: the notebook has not ended {KERNEL_GRACE_S} s after {self.received.name}: killing its "
              "kernel; the run is documented from its folder", flush=True)
        self.killed_kernel = True
        with contextlib.suppress(OSError):  # it ended meanwhile
            asyncio.run(self.km.provisioner.kill())  # a signal or Popen.kill: bound to no event loop

    def _write_request(self) -> None:
        run_folder.request_stop(self.run_dir, self.received.name, "lib.execute")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, help="a params/ YAML file (default: the official contract)")
    parser.add_argument("-p", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                        help="set one parameter (repeatable), e.g. -p max_steps=300; validated like the others")
    parser.add_argument("--run-dir", type=Path, help="the NEW run folder (default: run_dir from the parameters, "
                        "else submission_runs/<params name>-<time>)")
    parser.add_argument("--preflight-only", action="store_true",
                        help="rehearse: run M44.0 into a scratch folder under build/rehearsals/, claim nothing")
    parser.add_argument("--verbose", action="store_true",
                        help="print every cell's output as papermill runs it (default: one line per phase and progress)")
    args = parser.parse_args(argv)
    utf8_output()
    # papermill logs each cell it starts at INFO: shown with --verbose only, with the cells' output.
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s",
                        stream=sys.stdout)

    try:  # every parameter validated before anything is written: a typo never spends the folder
        profile = read_profile(args.params) if args.params else {}
        overrides = dict(parse_override(text) for text in args.overrides)
        if args.run_dir:
            overrides["run_dir"] = str(args.run_dir)
        elif "run_dir" not in {**profile, **overrides} and args.params:
            overrides["run_dir"] = repo_relative(new_run_dir(args.params.stem))
        cfg = load_config(args.params, overrides)
    except ValueError as exc:
        print(f"lib.execute: parameters: {exc}", file=sys.stderr)
        return 2
    run_dir = resolve_path(cfg.run_dir)
    if args.preflight_only:
        rest = [arg for arg in (sys.argv[1:] if argv is None else argv) if arg != "--preflight-only"]
        return rehearse(cfg, run_dir, args.params, " ".join(["python -m lib.execute", *map(_quoted, rest)]))

    with Stop() as stop:
        try:
            if run_folder.is_official(run_dir):
                check_armed(cfg)  # the one shot goes ahead only after a rehearsal of it passed here
            claim = run_folder.claim(run_dir, "lib.execute")  # before papermill writes anything in it
        except (ValueError, OSError) as exc:  # FileExistsError included: used, or claimed by a racing launcher
            print(f"lib.execute: {exc}", file=sys.stderr)
            return 2
        stop.claimed(run_dir)
        os.environ[run_folder.TOKEN_ENV] = claim.token  # the kernel inherits it: the claim is the notebook's own
        with keep_awake() as awake:
            os.environ[KEEP_AWAKE_ENV] = awake  # the environment snapshot records it
            return execute(run_dir, {**profile, **overrides, "run_dir": repo_relative(run_dir)}, stop, args.verbose)


def execute(run_dir: Path, params: dict, stop: Stop, verbose: bool = False) -> int:
    """Run the notebook into the claimed `run_dir`, complete and seal the evidence; return the exit status."""
    output = run_dir / NOTEBOOK_NAME
    print(f"M44 run into {display_path(run_dir)}{'' if verbose else ' (each cell: --verbose)'}", flush=True)
    with contextlib.nullcontext() if verbose else Progress(run_dir):
        failed = run_notebook(output, params, stop, verbose)
    stop.finished()  # from here on a signal is answered, not obeyed: the evidence is being completed
    if not (run_dir / SUMMARY_FACTS).exists():  # the notebook never reached M44.3: consolidate from the files
        from lib import consolidation

        why = run_folder.stop_cause(run_dir) or f"the notebook stopped: {failed}"
        if stop.killed_kernel:
            why += f"; the notebook had not ended {KERNEL_GRACE_S} s later and its kernel was killed"
        print(f"lib.execute: consolidating from the run folder ({why})", flush=True)
        consolidation.consolidate_from_files(run_dir, why)
        failed = failed or why
    report = None
    try:
        if not output.exists():
            raise FileNotFoundError(f"no executed notebook to render: the run stopped before papermill wrote "
                                    f"{NOTEBOOK_NAME}")
        drop_papermill_banner(output)
        report = render_html(output)
    except Exception as exc:  # the report is evidence too: not writing it fails the run, documented
        failed = document_late_failure(run_dir, "report", exc) or failed
    if not seal_evidence(run_dir):
        return 1
    problems = verify(run_dir)  # the folder as it will be committed: every hash, file and fact
    for problem in problems:
        print(f"VERIFY FAILED: {problem}")
    facts = read_json(run_dir / SUMMARY_FACTS)
    print(f"\n{outcome_line(facts)}")
    print(f"Report: {report or 'NOT WRITTEN (see ' + FAILURE_ANALYSIS + ')'}")
    if not completed(facts):
        if stop.received:
            print(f"Stopped by {stop.received.name}. Next: read {run_dir / FAILURE_ANALYSIS}; start the next run in "
                  "a new folder")
            return 128 + stop.received.value
        print(f"FAILED. Next: {next_step(facts)} (details: {run_dir / FAILURE_ANALYSIS})")
        return 1
    if stop.received:  # it fell between the last phase and M44.3, where the kernel ignores it: nothing was stopped
        print(f"{stop.received.name} came after the run's last phase: nothing was stopped")
    if problems:
        print(f"The run folder does not verify ({len(problems)} problems, above); the summary says which files")
        return 1
    if failed is not None:  # after M44.3 (the kernel died showing the outcome): the evidence stands, the notebook did not
        print(f"The run completed, but its notebook did not end ({failed}): its report may lack the outcome card")
        return 1
    committed = "commit the folder (git add " + repo_relative(run_dir) + ")" if run_folder.is_official(run_dir) else \
        "open the report"
    print(f"COMPLETED. Summary: {run_dir / SUMMARY}. Next: {committed}")
    return 0


def drop_papermill_banner(notebook: Path) -> None:
    """Remove the cell papermill puts first in a failed notebook ("An Exception was encountered at In [8]"): the
    outcome card states the failure and its cause; the error itself stays in the last cell's output."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    cells = [cell for cell in nb.cells if "papermill-error-cell-tag" not in cell.metadata.get("tags", [])]
    if len(cells) < len(nb.cells):
        nb.cells = cells
        write_text(notebook, nbformat.writes(nb) + "\n")


def run_notebook(output: Path, params: dict, stop: Stop, verbose: bool = False) -> str | None:
    """papermill into `output`; None when the notebook ran to its end, else why it did not."""
    try:  # here, under Stop: a refused launch never pays for them, a stopped one is documented
        import papermill
        from nbclient.exceptions import DeadKernelError
    except ImportError as exc:  # an incomplete environment
        return describe_exception(exc).split("\n")[0]
    if stop.received:  # before the claim, or while papermill was imported
        return "stopped before the notebook started"
    try:
        papermill.execute_notebook(
            # Relative where it can be: papermill records both paths in run.ipynb, evidence that names no user folder.
            _from_here(NOTEBOOK), _from_here(output), parameters=params, cwd=str(REPO_ROOT),
            kernel_manager_class=stop.manager_class(),
            log_output=verbose, progress_bar=False,  # with --verbose, cell output streams to this terminal live
            # The kernel's own warning that it talks over TCP on localhost is noise for a person running a command.
            extra_arguments=["--IPKernelApp.log_level=ERROR"],
        )
    except Exception as exc:
        if hasattr(exc, "ename"):  # papermill's PapermillExecutionError: the notebook documented the failure
            return str(exc.evalue).split("\n")[0]
        if isinstance(exc, DeadKernelError):  # nbclient noticed: its process is gone, with no traceback to show
            return "the kernel died in the middle of a cell (ended from outside: out of memory, or a crash in native code)"
        traceback.print_exc()  # the kernel could not start, or papermill could not save run.ipynb (a full disk)
        return describe_exception(exc).split("\n")[0]
    return None


def _from_here(path: Path) -> str:
    """`path` relative to this process's working folder when inside it (as papermill resolves it), else as it is."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def document_late_failure(run_dir: Path, phase: str, exc: BaseException) -> str | None:
    """Record a failure after consolidation (writing the report) as the run's failure; its cause, or None."""
    from lib import consolidation

    cause = describe_exception(exc).split("\n")[0]
    print(f"FAILED {phase}: {cause}", flush=True)
    try:
        consolidation.record_late_failure(run_dir, phase, cause, "".join(traceback.format_exception(exc)))
    except Exception as again:  # the disk cannot take even that: say so plainly
        print(f"EVIDENCE INCOMPLETE: {phase} failed ({cause}) and documenting it failed too "
              f"({type(again).__name__}: {again}); {run_dir} does not verify", flush=True)
        return None
    return cause


def seal_evidence(run_dir: Path) -> bool:
    """The final manifest (run.ipynb and run.html hashed too), then the folder made read-only."""
    try:
        write_manifest(run_dir, final=True)
    except OSError as exc:
        print(f"EVIDENCE INCOMPLETE: the final manifest could not be written ({exc}); {run_dir} does not verify",
              flush=True)
        return False
    run_folder.seal(run_dir)
    return True


def _quoted(arg: str) -> str:
    return f'"{arg}"' if not arg or any(c.isspace() for c in arg) else arg


def rehearse(cfg, run_dir: Path, params: Path | None, run_command: str) -> int:
    """Pre-flight with these parameters into a scratch folder; the run's own folder is looked at, never touched."""
    from lib.preflight import run_preflight  # torch and transformers: only when rehearsing

    scratch = new_run_dir((params.stem if params else "official") + "-rehearsal", REHEARSALS)
    scratch.mkdir(parents=True)
    rehearsal_cfg = dataclasses.replace(cfg, run_dir=str(scratch))
    rehearsal_cfg.save(scratch)
    print(f"Rehearsal of the run into {run_dir} (pre-flight only; scratch folder {scratch})", flush=True)
    try:
        run_preflight(rehearsal_cfg, scratch, rehearsal_for=run_dir)
    except RuntimeError as exc:
        print(f"\nREHEARSAL FAILED: {exc}\nNothing was claimed; fix the [FAIL] lines and rehearse again.")
        return 1
    record_pass(cfg, scratch)
    print(f"\nREHEARSAL PASSED: every pre-flight check passes; {run_dir} is free for the run.")
    armed = f"The official run is armed (recorded in {scratch / RECORD}). " if run_folder.is_official(run_dir) else ""
    print(f"{armed}Run it next:\n    {run_command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
