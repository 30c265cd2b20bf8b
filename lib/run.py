"""The run's state: its folder, its config, and the outcome of every phase; the notebook's cells call it.

Every phase record is also written to phases.json as the phase starts and ends, so a run whose notebook never
reaches consolidation (the kernel died, the launcher was stopped between cells) can still be consolidated by
lib.execute, or explained by lib.verify. Each phase runs once. A kernel that a person or a script drives cell by
cell is an interactive run, whose cells may run again (lib/interactive.py); in any other run a phase that already
ran is refused before it writes anything.
"""

from __future__ import annotations

import dataclasses
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lib import consolidation, run_folder
from lib.config import (
    RunConfig, collect_parameters, display_path, resolve_path, save_invalid_parameters, without_local_paths,
)
from lib.console import describe_exception
from lib.contract import NOTEBOOK, PHASES
from lib.evidence import write_json
from lib.interactive import HOW_TO_STEP_THROUGH, Interactive, Kernel, identify_kernel
from lib.printable import one_line
from lib.rehearsal import arming, check_armed
from lib.repository import describe_repository
from lib.verify import verify


class Refused(Exception):
    """A cell refused to run, and nothing was written. The notebook shows its message alone, without a traceback."""

    def _render_traceback_(self) -> list[str]:  # IPython's hook: what an error output shows instead of a traceback
        return [f"REFUSED: {self}"]


class RunFailed(Exception):
    """The run ended failed (documented), or its evidence does not verify: papermill exits non-zero on it."""

    def _render_traceback_(self) -> list[str]:
        return [str(self)]


@dataclass
class PhaseRecord:
    """What happened in one phase; the evidence files are written from these."""

    name: str
    status: str  # "running" while it runs, then "completed" | "failed" | "skipped"
    duration_s: float = 0.0
    cause: str = ""  # one line: why it failed or was skipped
    traceback: str = ""


@dataclass
class Run:
    """One M44 run. Phases run through `phase`; `finish` always writes the evidence."""

    dir: Path
    cfg: RunConfig | None
    params: dict
    launcher: str  # who claimed the folder: "lib.execute", "papermill", "interactive" or "python"
    phases: dict[str, PhaseRecord] = field(default_factory=dict)
    repository_before: dict = field(default_factory=dict)
    outcome: dict | None = None  # the facts, set by consolidate()
    interactive: Interactive | None = None  # set when the kernel is driven cell by cell
    rehearsal: str | None = None  # an official run: what armed it (lib/rehearsal.py)
    namespace: dict | None = field(default=None, repr=False, compare=False)  # the live notebook globals (interactive)

    @classmethod
    def start(cls, namespace: dict) -> Run:
        """Validate the notebook's parameters, claim a new run folder, and record the start.

        An invalid parameter does not raise here: it is recorded as a failed "parameters" phase so that the run
        still documents itself. Refused before anything is written (Refused): a folder that already holds a run
        or that another launcher claims, papermill writing the notebook into another folder than run_dir, an
        official folder without a passing rehearsal, an interactive kernel on an official folder.
        """
        params = collect_parameters(namespace)
        run_dir = params.get("run_dir")
        if not isinstance(run_dir, str) or not run_dir.strip():
            # Without a folder there is nowhere to document anything: stop before writing.
            raise Refused(f"parameter 'run_dir' must be a folder path (a string), got {run_dir!r}")
        run_dir = resolve_path(run_dir)
        interactive = None
        try:
            run_folder.check_location(run_dir)
            if run_folder.owns(run_dir, os.environ.get(run_folder.TOKEN_ENV)):  # lib.execute claimed it
                claimed = run_folder.read_claim(run_dir)
            elif (kernel := identify_kernel(namespace)).launcher == "interactive":
                claimed, starts = run_folder.claim_interactive(run_dir, kernel.detected_by)
                interactive = Interactive(kernel.detected_by, starts)
            else:  # the papermill command (or plain Python) claims the folder here
                _refuse_a_folder_apart_from_the_notebook(kernel, run_dir)
                if run_folder.is_official(run_dir):
                    check_armed(_official_config(params))
                claimed = run_folder.claim(run_dir, kernel.launcher)
        except (ValueError, OSError) as exc:  # FileExistsError included
            raise Refused(str(exc)) from None

        run = cls(dir=run_dir, cfg=None, params=params, launcher=claimed.launcher, interactive=interactive,
                  namespace=namespace if interactive else None)
        run.snapshot_repository()
        if interactive:
            print(f"Interactive run ({interactive.detected_by}): phases may be run again; see README, "
                  "'Stepping through the notebook'")
        t0 = time.perf_counter()
        try:
            run.cfg = RunConfig.from_parameters(params)
        except ValueError as exc:
            run._record("parameters", "failed", t0, exc)
            print(f"FAILED parameters: {exc}")
        else:
            if run_folder.is_official(run_dir):
                run.rehearsal = arming(run.cfg) or "no passing rehearsal found when the notebook started"
            run._record("parameters", "completed", t0)
            print(f"Run folder: {display_path(run.dir)}")
        run.save_config()
        return run

    def phase(self, name: str, fn: Callable[..., Any], *inputs: Any, needs: str = "parameters") -> Any:
        """Run `fn(cfg, run_dir, *inputs)` as phase `name`, unless the phase it needs did not complete.

        Returns what `fn` returns, or None when the phase failed or was skipped. A failure is recorded with its
        traceback and never raised here: consolidation must still run. Raises Refused, before anything changes,
        for a phase that already ran in a run that is not interactive, and for a changed parameter an
        interactive run cannot apply.
        """
        if self.interactive is not None:
            try:
                self.interactive.before_phase(self, name)
            except ValueError as exc:
                raise Refused(str(exc)) from None
        elif name in self.phases or self.outcome is not None:
            raise Refused(f"{name} already ran in this run ({self._ran_as(name)}), and a run started by "
                          f"{self.launcher} runs each phase once: nothing was run, deleted or written; "
                          f"{HOW_TO_STEP_THROUGH}")
        needed = self.phases.get(needs)
        if needed is None or needed.status != "completed":
            why = f"skipped because {needs} {needed.status if needed else 'did not run'}"
            self.phases[name] = PhaseRecord(name, "skipped", cause=why)
            self.save()
            print(f"SKIPPED {name}: {why}" + (f" (run the {needs} cell first)" if self.interactive else ""))
            return None
        if stopped := run_folder.stop_cause(self.dir):  # lib.execute was stopped before the kernel was up, or between cells
            self.phases[name] = PhaseRecord(name, "failed", cause=stopped)
            self.save()
            print(f"FAILED {name} before it started: {self.phases[name].cause}", flush=True)
            return None
        print(f"=== {name} ===", flush=True)
        self.phases[name] = PhaseRecord(name, "running")
        if self.interactive is not None:
            self.interactive.counted(name)
        self.save()
        t0 = time.perf_counter()
        try:
            result = fn(self.cfg, self.dir, *inputs)
        except (Exception, KeyboardInterrupt) as exc:
            self._record(name, "failed", t0, exc)
            print(f"FAILED {name} after {self.phases[name].duration_s:.1f} s: {self.phases[name].cause}")
            print(self.phases[name].traceback)
            return None
        self._record(name, "completed", t0)
        print(f"completed {name} in {self.phases[name].duration_s:.1f} s", flush=True)
        return result

    @property
    def failed_phase(self) -> PhaseRecord | None:
        return next((p for p in self.phases.values() if p.status == "failed"), None)

    def consolidate(self) -> dict:
        """M44.3: check the repository, write the facts, the summaries (and failure analysis), hash everything.

        Never raises for a failed run: the evidence is completed first, `finish` raises after. An interactive
        run consolidated again starts from its phases' records alone; any other run consolidates once.
        """
        if self.interactive is not None:
            self.interactive.before_consolidation(self)
        elif self.outcome is not None:
            raise Refused(f"consolidation already ran in this run, and a run started by {self.launcher} "
                          f"consolidates once: nothing was written; {HOW_TO_STEP_THROUGH}")
        repository, guard = consolidation.repository_guard(self.repository_before, self.dir)
        if guard is not None:
            self.phases[guard["name"]] = PhaseRecord(**guard)
            print(f"FAILED repository guard: {guard['cause']}")
            if self.interactive is not None:
                print("(an edit while stepping through? run preflight again, and the cells after it, for evidence "
                      "from one state of the code)")
        self.save()
        phases = [dataclasses.asdict(p) for p in self.phases.values()]
        self.outcome = consolidation.consolidate(self.dir, self.cfg, self.params, phases, repository, self.launcher)
        return self.outcome

    def finish(self) -> None:
        """Consolidate (unless done) and verify the folder; raise if a phase failed or it does not verify.

        Raising is what makes papermill exit non-zero. The verification only reads: anything written after the
        manifest would itself be a problem. Returns nothing, so the notebook's last cell shows the outcome lines
        and no object.
        """
        if self.outcome is None:
            self.consolidate()
        problems = verify(self.dir, report_pending=True)  # run.html comes after the notebook
        for problem in problems:
            print(f"VERIFY FAILED: {problem}")
        print(f"verification of the run folder: {'OK' if not problems else f'{len(problems)} problems'}")
        if self.interactive is not None:
            notebook = self.namespace.get("__session__") or self.namespace.get("__vsc_ipynb_file__") or "NOTEBOOK"
            print(f"To render this run's report (run.ipynb, run.html): save the notebook, then run "
                  f"python -m lib.lab render {notebook}")
        failed = self.failed_phase
        if failed is not None:
            raise RunFailed(f"M44 run FAILED in phase {failed.name}: {failed.cause}\n"
                            f"The evidence is complete in {self.dir}; the cause and what to do next are on the card "
                            "at the top and in failure_analysis.md.")
        if problems:
            raise RunFailed(f"M44 run COMPLETED, but its evidence does not verify ({len(problems)} problems, the "
                            f"first: {problems[0]}); the summary lists them all.")

    # --- records -------------------------------------------------------------------------------

    def save(self) -> None:
        """phases.json: the phase records so far, the repository at the start, and how a person stepped through."""
        state = {
            "repository_before": self.repository_before,
            "phases": [dataclasses.asdict(p) for p in self.phases.values()],
        }
        if self.interactive is not None:
            state["interactive"] = dataclasses.asdict(self.interactive)
        if self.rehearsal is not None:
            state["rehearsal"] = self.rehearsal
        write_json(self.dir / PHASES, state)

    def save_config(self) -> None:
        if self.cfg is None:
            save_invalid_parameters(self.dir, self.params)
        else:
            self.cfg.save(self.dir)

    def snapshot_repository(self) -> None:
        """The repository state the guard compares with at consolidation: at the start, or at a pre-flight run again."""
        self.repository_before = describe_repository(self.dir)

    def _record(self, name: str, status: str, t0: float, exc: BaseException | None = None) -> None:
        record = PhaseRecord(name, status, duration_s=round(time.perf_counter() - t0, 3))
        if exc is not None:
            record.cause = self._interruption() if isinstance(exc, KeyboardInterrupt) else (
                one_line(describe_exception(exc).split("\n")[0]))
            record.traceback = without_local_paths("".join(traceback.format_exception(exc)))
        self.phases[name] = record
        self.save()

    def _ran_as(self, name: str) -> str:
        return self.phases[name].status if name in self.phases else "consolidated"

    def _interruption(self) -> str:
        """The cause of a KeyboardInterrupt: the signal lib.execute received, or an interrupt of the kernel itself."""
        return run_folder.stop_cause(self.dir) or (
            "interrupted: KeyboardInterrupt (Ctrl-C, or the kernel interrupted from Jupyter)")


def _refuse_a_folder_apart_from_the_notebook(kernel: Kernel, run_dir: Path) -> None:
    """papermill writes the executed notebook where its command says; the evidence must go to the same folder."""
    if kernel.notebook is None:
        return
    expected = run_dir / NOTEBOOK
    if kernel.notebook.resolve() != expected.resolve():
        raise ValueError(
            f"papermill writes this notebook to {kernel.notebook}, but parameter 'run_dir' is {run_dir}: a run's "
            f"notebook and its evidence belong in one folder, so nothing was claimed. Name the folder both ways: "
            f"papermill notebooks/m44.ipynb {kernel.notebook.parent.as_posix()}/{NOTEBOOK} -p run_dir "
            f"{kernel.notebook.parent.as_posix()} (or run python -m lib.execute, which does both)")


def _official_config(params: dict) -> RunConfig:
    """An official folder is claimed only for valid parameters: an invalid one would spend it on nothing."""
    try:
        return RunConfig.from_parameters(params)
    except ValueError as exc:
        raise ValueError(f"{exc}; an official folder is not claimed for invalid parameters") from None
