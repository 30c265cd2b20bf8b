"""The run's state: its folder, its config, and the outcome of every phase.

Every phase record is also written to phases.json as the phase starts and ends, so a run whose
notebook never reaches consolidation (the kernel died, the launcher was stopped between cells) can
still be consolidated by lib.execute, or explained by lib.verify.
"""

from __future__ import annotations

import dataclasses
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lib import consolidation, runfolder
from lib.config import RunConfig, collect_parameters, resolve_path
from lib.contract import CONFIG, PHASES, STOP_REQUEST
from lib.evidence import read_json, write_json
from lib.snapshot import describe_repository
from lib.verify import verify


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

    @classmethod
    def start(cls, namespace: dict, launcher: str = "papermill") -> Run:
        """Validate the notebook's parameters, claim a new run folder, and record the start.

        An invalid parameter does not raise here: it is recorded as a failed "parameters" phase so
        that the run still documents itself. A folder that already holds a run, or that another
        launcher claims, raises at once and is left untouched (no retries, no overwrites).
        """
        params = collect_parameters(namespace)
        run_dir = params.get("run_dir")
        if not isinstance(run_dir, str) or not run_dir.strip():
            # Without a folder there is nowhere to document anything: stop before writing.
            raise ValueError(f"parameter 'run_dir' must be a folder path (a string), got {run_dir!r}")
        run_dir = resolve_path(run_dir)
        claimed = runfolder.read_claim(run_dir) if runfolder.owns(run_dir, os.environ.get(runfolder.TOKEN_ENV)) else None
        if claimed is None:  # the raw papermill command (or a notebook run by hand) claims the folder here
            claimed = runfolder.claim(run_dir, launcher)

        run = cls(dir=run_dir, cfg=None, params=params, launcher=claimed.launcher,
                  repository_before=describe_repository(run_dir))
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
        recorded with its traceback and never raised here: consolidation must still run.
        """
        needed = self.phases.get(needs)
        if needed is None or needed.status != "completed":
            why = f"skipped because {needs} {needed.status if needed else 'did not run'}"
            self.phases[name] = PhaseRecord(name, "skipped", cause=why)
            self._save()
            print(f"SKIPPED {name}: {why}")
            return None
        print(f"=== {name} ===", flush=True)
        self.phases[name] = PhaseRecord(name, "running")
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

        Never raises for a failed run: the evidence is completed first, `finish` raises after.
        """
        repository, guard = consolidation.repository_guard(self.repository_before, self.dir)
        if guard is not None:
            self.phases[guard["name"]] = PhaseRecord(**guard)
            print(f"FAILED repository guard: {guard['cause']}")
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
        write_json(self.dir / PHASES, {
            "repository_before": self.repository_before,
            "phases": [dataclasses.asdict(p) for p in self.phases.values()],
        })


def _resolved_config(run: Run) -> dict:
    if run.cfg is None:
        return {"valid": False, "parameters": {k: repr(v) for k, v in run.params.items()}}
    return {"valid": True, "sha256": run.cfg.sha256(), "parameters": run.cfg.to_dict()}
