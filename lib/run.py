"""The run's state: its folder, its config, and the outcome of every phase."""

from __future__ import annotations

import dataclasses
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lib import consolidation
from lib.config import RunConfig, collect_parameters, resolve_path
from lib.contract import CONFIG, NOTEBOOK
from lib.evidence import write_json
from lib.snapshot import describe_repository
from lib.verify import verify

# papermill writes the executed notebook into the run folder before the first cell runs, and
# the official folder is committed empty (papermill needs it to exist): neither makes it used.
_NOT_A_RUN = {NOTEBOOK, ".gitkeep"}


@dataclass
class PhaseRecord:
    """What happened in one phase; the evidence files are written from these."""

    name: str
    status: str  # "completed" | "failed" | "skipped"
    duration_s: float = 0.0
    cause: str = ""  # one line: why it failed or was skipped
    traceback: str = ""


@dataclass
class Run:
    """One M44 run. Phases run through `phase`; `finish` always writes the evidence."""

    dir: Path
    cfg: RunConfig | None
    params: dict
    phases: dict[str, PhaseRecord] = field(default_factory=dict)
    repository_before: dict = field(default_factory=dict)
    outcome: dict | None = None  # the facts, set by consolidate()

    @classmethod
    def start(cls, namespace: dict) -> Run:
        """Validate the notebook's parameters and open a new run folder.

        An invalid parameter does not raise here: it is recorded as a failed "parameters"
        phase so that the run still documents itself. A folder that already holds a run
        raises at once and is left untouched (no retries, no overwrites).
        """
        params = collect_parameters(namespace)
        run_dir = params.get("run_dir")
        if not isinstance(run_dir, str) or not run_dir.strip():
            # Without a folder there is nowhere to document anything: stop before writing.
            raise ValueError(f"parameter 'run_dir' must be a folder path (a string), got {run_dir!r}")
        run_dir = resolve_path(run_dir)
        refuse_used_folder(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)

        run = cls(dir=run_dir, cfg=None, params=params, repository_before=describe_repository(run_dir))
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
            print(f"SKIPPED {name}: {why}")
            return None
        print(f"=== {name} ===", flush=True)
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
        """M44.3: check the repository, write the summary (and failure analysis), hash everything.

        Never raises for a failed run: the evidence is completed first, `finish` raises after.
        """
        repository = {**self.repository_before, **self._check_repository_unchanged()}
        phases = [dataclasses.asdict(p) for p in self.phases.values()]
        self.outcome = consolidation.consolidate(self.dir, self.cfg, self.params, phases, repository)
        return self.outcome

    def finish(self) -> None:
        """Consolidate (unless done) and verify the folder; raise if a phase failed or it does not verify.

        Raising is what makes papermill exit non-zero. The verification only reads: anything
        written after the manifest would itself be a problem. Returns nothing, so the notebook's
        last cell shows the outcome lines and no object.
        """
        if self.outcome is None:
            self.consolidate()
        problems = verify(self.dir)
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

    def _check_repository_unchanged(self) -> dict:
        """The run writes only inside its folder: a changed repository fails the run."""
        before, after = self.repository_before, describe_repository(self.dir)
        if (before["status"], before["diff_sha256"]) == (after["status"], after["diff_sha256"]):
            return {"unchanged": True, "change": ""}
        new_lines = sorted(set(after["status"].splitlines()) - set(before["status"].splitlines()))
        cause = "the repository changed outside the run folder during the run: " + (
            ", ".join(new_lines[:5]) or "tracked files were edited (git diff differs)")
        self.phases["repository guard"] = PhaseRecord("repository guard", "failed", cause=cause)
        print(f"FAILED repository guard: {cause}")
        return {"unchanged": False, "change": cause}

    def _record(self, name: str, status: str, t0: float, exc: BaseException | None = None) -> None:
        record = PhaseRecord(name, status, duration_s=round(time.perf_counter() - t0, 3))
        if exc is not None:
            record.cause = f"{type(exc).__name__}: {exc}".splitlines()[0]
            record.traceback = "".join(traceback.format_exception(exc))
        self.phases[name] = record


def refuse_used_folder(run_dir: Path) -> None:
    """Raise FileExistsError if `run_dir` already holds (part of) a run."""
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise FileExistsError(f"run_dir {run_dir} exists and is not a folder")
    leftovers = sorted(p.name for p in run_dir.iterdir() if p.name not in _NOT_A_RUN)
    if leftovers:
        raise FileExistsError(
            f"run_dir {run_dir} already holds a run ({', '.join(leftovers[:5])}); "
            "runs are never repeated into the same folder: choose a new run_dir"
        )


def _resolved_config(run: Run) -> dict:
    if run.cfg is None:
        return {"valid": False, "parameters": {k: repr(v) for k, v in run.params.items()}}
    return {"valid": True, "sha256": run.cfg.sha256(), "parameters": run.cfg.to_dict()}
