"""The run's state: its folder, its config, and the outcome of every phase.

Every phase record is also written to phases.json as the phase starts and ends, so a run whose
notebook never reaches consolidation (the kernel died, the launcher was stopped between cells) can
still be consolidated by lib.execute, or explained by lib.verify.

A run is interactive when a person steps through the notebook in Jupyter (`make lab`). The kernel shows
it: a Jupyter server (JupyterLab, Notebook) starts its kernels with JPY_SESSION_NAME in their environment,
VS Code puts `__vsc_ipynb_file__` in the namespace, and make lab's scratch copy sets `__m44_lab__`;
papermill's and lib.execute's kernels have none of these. An interactive run never writes into an
official folder, is labelled interactive in claim.json, phases.json and the summary, and its cells may
be run again, each with a defined meaning:
- the first cell starts the run over in the same folder (everything in it deleted);
- a phase run again first deletes its own evidence and that of every later phase, consolidation's
  included: the run is un-finished until its last cells run again;
- a parameter changed in the notebook is applied (config.json rewritten, the change recorded) when the
  phase that first reads it, or an earlier one, runs; otherwise the phase refuses to run;
- phases.json counts how often each phase ran, and the summary says so.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import shutil
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lib import consolidation, runfolder
from lib.config import RunConfig, collect_parameters, parameter_names, resolve_path
from lib.contract import (
    CONFIG, FINISH_FILES, INTERACTIVE, LAB_MARKER, PHASE_ORDER, PHASES, STOP_REQUEST, files_before,
)
from lib.evidence import read_json, write_json
from lib.snapshot import describe_repository
from lib.verify import verify


# The phase that first reads each parameter; pre-flight reads every other one (in its checks, or in the
# model and data it prepares). A changed value applies when that phase, or an earlier one, runs again.
FIRST_READ_BY = {
    **dict.fromkeys(("max_steps", "gradient_accumulation_steps", "learning_rate", "lr_scheduler", "warmup_ratio",
                     "weight_decay", "max_grad_norm", "logging_steps"), "training"),
    **dict.fromkeys(("eval_batch_size", "max_new_tokens"), "evaluation"),
}


def interactive_kernel(namespace: dict) -> str | None:
    """What shows that a person drives this kernel, in words; None for papermill, lib.execute and plain Python."""
    signs = []
    if namespace.get(LAB_MARKER):
        signs.append("make lab's scratch copy")
    if os.environ.get("JPY_SESSION_NAME"):
        signs.append(f"a Jupyter server's session on {os.environ['JPY_SESSION_NAME']}")
    if namespace.get("__vsc_ipynb_file__"):
        signs.append(f"VS Code on {namespace['__vsc_ipynb_file__']}")
    return "; ".join(signs) or None


@dataclass
class Interactive:
    """How a person stepped through the run: what showed it, and what ran again or changed (in phases.json)."""

    detected_by: str
    starts: int = 1  # how often the first cell started the run in this folder; each start deletes the last
    runs: dict[str, int] = field(default_factory=dict)  # phase -> how often it ran since the last start
    parameter_changes: list[dict] = field(default_factory=list)  # {phase, run, changed: {name: [old, new]}}


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
    launcher: str  # who claimed the folder: "lib.execute", "papermill" or "interactive"
    phases: dict[str, PhaseRecord] = field(default_factory=dict)
    repository_before: dict = field(default_factory=dict)
    outcome: dict | None = None  # the facts, set by consolidate()
    interactive: Interactive | None = None  # set when a person steps through the notebook
    namespace: dict | None = field(default=None, repr=False, compare=False)  # the live notebook globals (interactive)

    @classmethod
    def start(cls, namespace: dict, launcher: str = "papermill") -> Run:
        """Validate the notebook's parameters, claim a new run folder, and record the start.

        An invalid parameter does not raise here: it is recorded as a failed "parameters" phase so
        that the run still documents itself. A folder that already holds a run, or that another
        launcher claims, raises at once and is left untouched (no retries, no overwrites). An
        interactive kernel never claims an official folder, and starts its own folder over.
        """
        params = collect_parameters(namespace)
        run_dir = params.get("run_dir")
        if not isinstance(run_dir, str) or not run_dir.strip():
            # Without a folder there is nowhere to document anything: stop before writing.
            raise ValueError(f"parameter 'run_dir' must be a folder path (a string), got {run_dir!r}")
        run_dir = resolve_path(run_dir)
        interactive = None
        if runfolder.owns(run_dir, os.environ.get(runfolder.TOKEN_ENV)):  # lib.execute claimed it for this notebook
            claimed = runfolder.read_claim(run_dir)
        elif (detected_by := interactive_kernel(namespace)) is not None:
            claimed, starts = claim_interactive(run_dir, detected_by)
            interactive = Interactive(detected_by, starts)
        else:  # the raw papermill command claims the folder here
            claimed = runfolder.claim(run_dir, launcher)

        run = cls(dir=run_dir, cfg=None, params=params, launcher=claimed.launcher,
                  repository_before=describe_repository(run_dir), interactive=interactive,
                  namespace=namespace if interactive else None)
        if interactive:
            print(f"Interactive run ({detected_by}): phases may be run again; see README, "
                  "'Stepping through the notebook'")
        t0 = time.perf_counter()
        try:
            run.cfg = RunConfig.from_parameters(params)
        except ValueError as exc:
            run._record("parameters", "failed", t0, exc)
            print(f"FAILED parameters: {exc}")
        else:
            run._record("parameters", "completed", t0)
            print(f"Run folder: {run.dir}")
            print(f"Config sha256: {run.cfg.sha256()}")
        write_json(run.dir / CONFIG, _resolved_config(run))
        return run

    def phase(self, name: str, fn: Callable[..., Any], *inputs: Any, needs: str = "parameters") -> Any:
        """Run `fn(cfg, run_dir, *inputs)` as phase `name`, unless the phase it needs did not complete.

        Returns what `fn` returns, or None when the phase failed or was skipped. A failure is
        recorded with its traceback and never raised here: consolidation must still run. In an
        interactive run, a changed parameter this phase cannot apply raises before anything changes.
        """
        if self.interactive is not None:
            self._run_again(name)
        needed = self.phases.get(needs)
        if needed is None or needed.status != "completed":
            why = f"skipped because {needs} {needed.status if needed else 'did not run'}"
            self.phases[name] = PhaseRecord(name, "skipped", cause=why)
            self._save()
            print(f"SKIPPED {name}: {why}" + (f" (run the {needs} cell first)" if self.interactive else ""))
            return None
        print(f"=== {name} ===", flush=True)
        self.phases[name] = PhaseRecord(name, "running")
        if self.interactive is not None:
            self.interactive.runs[name] = self.interactive.runs.get(name, 0) + 1
        self._save()
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

        Never raises for a failed run: the evidence is completed first, `finish` raises after. An
        interactive run consolidated again starts from its phases' records alone.
        """
        if self.interactive is not None:
            self._unfinish()
            for name, (old, new) in self._changed_parameters().items():
                print(f"note: {name} changed in the notebook ({old!r} -> {new!r}) after the phases ran: the evidence "
                      f"is from {old!r}; run {FIRST_READ_BY.get(name, 'preflight')} again to apply it")
        repository, guard = consolidation.repository_guard(self.repository_before, self.dir)
        if guard is not None:
            self.phases[guard["name"]] = PhaseRecord(**guard)
            print(f"FAILED repository guard: {guard['cause']}")
            if self.interactive is not None:
                print("(an edit while stepping through? run preflight again, and the cells after it, for evidence "
                      "from one state of the code)")
        self._save()
        phases = [dataclasses.asdict(p) for p in self.phases.values()]
        self.outcome = consolidation.consolidate(self.dir, self.cfg, self.params, phases, repository, self.launcher)
        return self.outcome

    def finish(self) -> None:
        """Consolidate (unless done) and verify the folder; raise if a phase failed or it does not verify.

        Raising is what makes papermill exit non-zero. The verification only reads: anything
        written after the manifest would itself be a problem. Returns nothing, so the notebook's
        last cell shows the outcome lines and no object.
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
            raise RuntimeError(
                f"M44 run FAILED in phase {failed.name}: {failed.cause} "
                f"(evidence complete in {self.dir})"
            )
        if problems:
            raise RuntimeError(f"M44 run folder {self.dir} failed verification: {problems[0]}")

    def _record(self, name: str, status: str, t0: float, exc: BaseException | None = None) -> None:
        record = PhaseRecord(name, status, duration_s=round(time.perf_counter() - t0, 3))
        if exc is not None:
            record.cause = self._interruption() if isinstance(exc, KeyboardInterrupt) else (
                f"{type(exc).__name__}: {exc}".splitlines()[0])
            record.traceback = "".join(traceback.format_exception(exc))
        self.phases[name] = record
        self._save()

    def _interruption(self) -> str:
        """The cause of a KeyboardInterrupt: the signal lib.execute received, or an interrupt of the kernel itself."""
        request = self.dir / STOP_REQUEST
        if request.exists():
            stop = read_json(request)
            return f"stopped by {stop['signal']} sent to {stop['to']} (pid {stop['pid']}, {stop['received_utc']})"
        return "interrupted: KeyboardInterrupt (Ctrl-C, or the kernel interrupted from Jupyter)"

    def _save(self) -> None:
        state = {
            "repository_before": self.repository_before,
            "phases": [dataclasses.asdict(p) for p in self.phases.values()],
        }
        if self.interactive is not None:
            state["interactive"] = dataclasses.asdict(self.interactive)
        write_json(self.dir / PHASES, state)

    # --- interactive runs -----------------------------------------------------------------------

    def _run_again(self, name: str) -> None:
        """Before phase `name` runs (again): apply or refuse changed parameters, then delete its evidence and all after it."""
        if self.cfg is not None:  # invalid at the start: every phase is skipped, and the first cell is the fix
            self._apply_changed_parameters(name)
        removed = remove_all_but(self.dir, files_before(name))
        earlier = PHASE_ORDER[:PHASE_ORDER.index(name)]
        self.phases = {key: record for key, record in self.phases.items() if key in earlier}
        self.outcome = None
        if name == "preflight":  # pre-flight snapshots the code the evidence comes from: the guard compares with it
            self.repository_before = describe_repository(self.dir)
        if removed:
            print(f"{name} runs again: deleted the evidence of {name} and every later phase ({', '.join(removed)}); "
                  "run the cells after it again to complete the run")
        self._save()

    def _unfinish(self) -> None:
        """Interactive: remove what consolidation and the report wrote, and their records, before consolidating again."""
        for name in FINISH_FILES:
            (self.dir / name).unlink(missing_ok=True)
        self.phases = {key: record for key, record in self.phases.items() if key in PHASE_ORDER}
        self.outcome = None

    def _changed_parameters(self) -> dict[str, tuple[Any, Any]]:
        """Parameters whose value in the notebook differs from the run's: name -> (the run's, the notebook's)."""
        live = collect_parameters(self.namespace)
        for name in sorted(set(live) - set(self.params)):  # a typo would otherwise change nothing, silently
            if close := difflib.get_close_matches(name, parameter_names(), n=1, cutoff=0.8):
                print(f"note: {name!r} is not a parameter and changes nothing; did you mean {close[0]!r}?")
        return {name: (self.params[name], self.namespace[name]) for name in self.params
                if name in self.namespace and self.namespace[name] != self.params[name]}

    def _apply_changed_parameters(self, name: str) -> None:
        """Apply parameters changed in the notebook if phase `name` comes early enough to use them; else raise."""
        changed = self._changed_parameters()
        if not changed:
            return
        described = ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changed.items())
        if "run_dir" in changed:
            raise ValueError(f"parameter 'run_dir' changed ({described}): a run keeps its folder; run the first code "
                             "cell again (Run.start) to start the run in the new folder. Nothing was run or deleted.")
        order = PHASE_ORDER.index
        used = {key: FIRST_READ_BY.get(key, "preflight") for key in changed}
        used = {key: reader for key, reader in used.items() if order(reader) < order(name) and self._ran(reader)}
        if used:
            first = min(used.values(), key=order)
            raise ValueError(
                f"parameter(s) changed after the phase that reads them ran: "
                f"{', '.join(f'{key} (read by {reader})' for key, reader in used.items())}; {name} would run on "
                f"evidence made with the old values. Run {first} again (its cell, then the ones after it) to apply "
                f"them, or set them back ({described}). Nothing was run or deleted.")
        try:
            cfg = RunConfig.from_parameters({**self.params, **{key: new for key, (_, new) in changed.items()}})
        except ValueError as exc:
            raise ValueError(f"{exc} (changed in the notebook: {described}; nothing was run or deleted)") from None
        self.params, self.cfg = cfg.to_dict(), cfg
        write_json(self.dir / CONFIG, _resolved_config(self))
        self.interactive.parameter_changes.append({
            "phase": name, "run": self.interactive.runs.get(name, 0) + 1,
            "changed": {key: [old, new] for key, (old, new) in changed.items()},
        })
        print(f"Parameters changed, applied from {name} on: {described} (config.json rewritten, sha256 {cfg.sha256()})")

    def _ran(self, name: str) -> bool:
        record = self.phases.get(name)
        return record is not None and record.status in ("completed", "failed")


def claim_interactive(run_dir: Path, detected_by: str) -> tuple[runfolder.Claim, int]:
    """Claim `run_dir` for an interactive run, and how often it has been started there.

    A folder an interactive kernel claimed earlier (this kernel: the first cell run again; or a kernel
    that no longer runs: restarted) is started over: everything in it is deleted. Refused: an official
    folder, a folder of another kind of run, one that a running kernel uses.
    """
    if runfolder.is_official(run_dir):
        raise ValueError(
            f"parameter 'run_dir': {run_dir} is an official one-shot folder, and this is an interactive run "
            f"({detected_by}), which never writes there. Step through a scratch copy instead: make lab "
            "(python -m lib.lab start) gives it a new submission_runs/interactive-... folder; the official run is "
            "python -m lib.execute")
    earlier = runfolder.read_claim(run_dir)
    if earlier is None or earlier.launcher != INTERACTIVE:
        return runfolder.claim(run_dir, INTERACTIVE), 1  # a folder holding another kind of run is refused here
    if earlier.host != socket.gethostname():
        raise FileExistsError(f"run_dir {run_dir} belongs to an interactive run on {earlier.host} (pid {earlier.pid}, "
                              f"started {earlier.started_utc}); choose a new run_dir")
    if earlier.pid != os.getpid() and runfolder.process_alive(earlier.pid):
        raise FileExistsError(
            f"run_dir {run_dir} is in use by another running kernel (pid {earlier.pid}, started {earlier.started_utc}); "
            "shut that kernel down (Kernel > Shut Down Kernel) and run this cell again, or choose a new run_dir")
    try:
        starts = read_json(run_dir / PHASES)["interactive"]["starts"] + 1
    except (OSError, ValueError, KeyError, TypeError):  # the earlier start stopped before its first record
        starts = 2
    removed = remove_all_but(run_dir, frozenset())
    print(f"Starting the run over in {run_dir} (start {starts}): deleted the earlier start's "
          f"{len(removed)} files and folders")
    return runfolder.claim(run_dir, INTERACTIVE), starts


def remove_all_but(folder: Path, keep: frozenset[str]) -> list[str]:
    """Delete every file and folder at the top of `folder` whose name is not in `keep`; their names, folders with a /."""
    removed = []
    for path in sorted(folder.iterdir()):
        if path.name in keep:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
            removed.append(f"{path.name}/")
        else:
            path.unlink()
            removed.append(path.name)
    return removed


def _resolved_config(run: Run) -> dict:
    if run.cfg is None:
        return {"valid": False, "parameters": {k: repr(v) for k, v in run.params.items()}}
    return {"valid": True, "sha256": run.cfg.sha256(), "parameters": run.cfg.to_dict()}
