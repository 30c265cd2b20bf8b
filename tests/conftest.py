"""Shared fixtures and helpers: the notebook run as users run it, and runs built once per test session.

Every notebook test drives the notebook the way a user does: the papermill command (`papermill_command`) or the
main command (`launch`), in a subprocess. A few run folders are read by many tests (`shared_run`): each is built
once per session, whatever the number of pytest-xdist processes (a file lock guards the build), and a test that
changes a folder changes its own copy (`copy_run`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from filelock import FileLock
from hypothesis import HealthCheck, settings

from lib.config import REPO_ROOT, RunConfig, default_parameters, load_config
from lib.execute import NOTEBOOK  # noqa: F401  (the tests import it from here)
from lib.model_builder import build_model_from_config, model_config_path

FAULTS = REPO_ROOT / "tests" / "faults"
# Property-based tests (Hypothesis): seeded, so that CI runs the same examples every time, and bounded in number.
settings.register_profile("m44", derandomize=True, max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "m44"))
EMBEDDED = REPO_ROOT / "params" / "embedded.yaml"


# Files whose tests each run the notebook on their own (a fault, a guardrail, a signal) and share nothing but
# `shared_run` folders: under pytest-xdist (make test) their tests are scheduled one by one, after the whole files,
# so that the processes finish together instead of one being left with a file of fifteen runs. Every other file
# goes to one process whole, its module fixtures (a JupyterLab server, a loaded Gemma, a browser) built once.
SPREAD = {"test_failures.py", "test_robustness.py", "test_launcher.py", "test_user_data.py", "test_telemetry.py",
          "test_distributed.py"}


def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist's scope scheduling (largest scope first) with a scope per test in SPREAD, per file elsewhere."""
    from xdist.scheduler import LoadScopeScheduling

    class FilesAndSpreadTests(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = nodeid.split("::", 1)[0]
            return nodeid if file.rsplit("/", 1)[-1] in SPREAD else file

    return FilesAndSpreadTests(config, log)


def _repository_status() -> set[str]:
    done = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO_ROOT,
                          capture_output=True, text=True, encoding="utf-8")
    return set(done.stdout.splitlines()) if done.returncode == 0 else set()


def pytest_sessionstart(session):
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        session.config.stash[_REPOSITORY] = _repository_status()


def pytest_sessionfinish(session, exitstatus):
    """The suite leaves the repository as it found it: a file a test wrote outside its run folders fails it."""
    if os.environ.get("PYTEST_XDIST_WORKER") or _REPOSITORY not in session.config.stash:
        return
    left = sorted(_repository_status() - session.config.stash[_REPOSITORY])
    if left:
        print("\nThe tests changed the repository (git status):\n  " + "\n  ".join(left), file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_REPOSITORY = pytest.StashKey[set]()


def profile(name: str) -> dict:
    return yaml.safe_load((REPO_ROOT / "params" / f"{name}.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def official_params() -> dict:
    return default_parameters()


@pytest.fixture
def embedded_cfg(official_params, tmp_path: Path) -> RunConfig:
    return load_config(EMBEDDED, {"run_dir": str(tmp_path / "run")})


# make test runs two pytest-xdist processes on this project's 2-core machines: one torch thread in each
# (inherited by every kernel and worker they start), or torch's thread pools oversubscribe the cores and
# the notebook tests run several times slower (measured: the demo's 1,500 steps took 8 min instead of 1).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def replace(cfg: RunConfig, **changes) -> RunConfig:
    return dataclasses.replace(cfg, **changes)


def with_fault(fault: str, env: dict | None = None) -> dict:
    """The environment that injects `fault` (tests/faults/sitecustomize.py) into every process started with it;
    "a,b" injects several at once, so that one run serves the tests of faults that do not interfere."""
    env = dict(os.environ if env is None else env)
    return {**env, "M44_FAULT": fault, "PYTHONPATH": os.pathsep.join(filter(None, [str(FAULTS), env.get("PYTHONPATH")]))}


def papermill_command(run_dir: Path, params: dict, *, env: dict | None = None, mkdir: bool = True,
                      output: Path | None = None, params_file: Path | None = None,
                      timeout: int = 900) -> subprocess.CompletedProcess:
    """The README's papermill command: the notebook into RUN_DIR/run.ipynb with the parameters of a YAML file.

    `params` are written to `params_file` (default: beside the folder, never in it) and passed with -f; run_dir is
    set to RUN_DIR.
    Returns the finished command: exit status 0 for a completed run, 1 for a documented failure or a refusal.
    """
    if mkdir:
        run_dir.mkdir(parents=True, exist_ok=True)
    params_file = params_file or run_dir.with_name(f"{run_dir.name}-params.yaml")
    params_file.write_text(yaml.safe_dump({**params, "run_dir": str(run_dir)}, allow_unicode=True), encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "papermill", "notebooks/m44.ipynb", str(output or run_dir / "run.ipynb"),
         "-f", str(params_file), "--cwd", ".", "--no-progress-bar"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, encoding="utf-8", timeout=timeout)


def launch(*args: str, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    """The main command, `python -m lib.execute ARGS`, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "lib.execute", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, encoding="utf-8", timeout=timeout)


def make_writable(folder: Path) -> None:
    """A sealed (read-only) run folder made writable again, as a user would before deleting it."""
    for path in [folder, *folder.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


def copy_run(source: Path, target: Path) -> Path:
    """A writable copy of a (shared, sealed) run folder, for a test that changes it."""
    shutil.copytree(source, target)
    make_writable(target)
    return target


@pytest.fixture(scope="session")
def session_folder(tmp_path_factory, worker_id) -> Path:
    """The folder every pytest-xdist process of this session shares (the base of their own tmp folders)."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


@pytest.fixture(scope="session")
def shared_run(session_folder) -> Callable[[str, Callable[[Path], None]], Path]:
    """`shared_run(name, build)`: the folder `build(folder)` made, built once per session for every process.

    The session's base folder is shared by the pytest-xdist processes; the first to ask builds under a file
    lock, the others wait and reuse it. A build that raised is not marked done, and the next asker retries.
    """
    root = session_folder / "shared-runs"
    root.mkdir(exist_ok=True)

    def get(name: str, build: Callable[[Path], None]) -> Path:
        folder, done = root / name, root / f"{name}.done"
        with FileLock(str(root / f"{name}.lock")):
            if not done.exists():
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir()
                build(folder)
                done.write_text("built\n", encoding="utf-8")
        return folder

    return get


WINDOWS_LOCALE = "en_US.CP1252"  # .ci/run makes it: localedef -i en_US -f CP1252 en_US.CP1252


@functools.cache
def windows_locale_installed() -> bool:
    probe = f"import locale; locale.setlocale(locale.LC_ALL, {WINDOWS_LOCALE!r})"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


def windows_like(env: dict | None = None) -> dict:
    """The environment of a Windows console before Python 3.15: output and files default to the ANSI code page
    (cp1252 here), UTF-8 mode off. Unchanged where the cp1252 locale is not installed."""
    env = dict(os.environ if env is None else env)
    if not windows_locale_installed():
        return env
    env.pop("PYTHONIOENCODING", None)
    return {**env, "LC_ALL": WINDOWS_LOCALE, "LANG": WINDOWS_LOCALE, "PYTHONUTF8": "0"}


def _build_demo(folder: Path) -> None:
    """The main command exactly as `make demo` runs it, into a folder outside the repository, on a simulated
    Windows machine: output in cp1252 with UTF-8 mode off (where the locale is installed), and evidence files held
    now and then by another program, as Windows' antivirus and indexer do (tests/faults: held_files)."""
    mark = folder / "held.txt"
    env = windows_like(with_fault("held_files", {**os.environ, "M44_FAULT_MARK": str(mark)}))
    done = launch("--params", "params/embedded.yaml", "--run-dir", str(folder / "run"), env=env)
    (folder / "stdout.txt").write_text(done.stdout, encoding="utf-8")
    (folder / "conditions.json").write_text(json.dumps({"locale": env.get("LC_ALL"), "held": mark.read_text(
        encoding="utf-8").split() if mark.exists() else []}), encoding="utf-8")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture
def official_folder(session_folder):
    """The repository's own submission_runs/m44_v1, held by one test at a time across the pytest-xdist processes:
    one test writes papermill's notebook into it (and cleans up), another asserts it untouched."""
    with FileLock(str(session_folder / "official-folder.lock")):
        yield REPO_ROOT / "submission_runs" / "m44_v1"


@pytest.fixture(scope="session")
def demo_run(shared_run) -> tuple[Path, str]:
    """The real embedded-default run that every test reading a demo reads: (its folder, what it printed)."""
    folder = shared_run("demo", _build_demo)
    return folder / "run", (folder / "stdout.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def demo_conditions(shared_run) -> dict:
    """How the demo ran: its locale (None: this machine's own) and the evidence files held while it ran."""
    return json.loads((shared_run("demo", _build_demo) / "conditions.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium, once per test process (tests/browser.py)."""
    from tools.browser import CHROMEDRIVER, CHROMIUM, start_browser

    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    driver = start_browser()
    yield driver
    driver.quit()


# A short completed run through the README's raw papermill command (run.ipynb saved again after the manifest, no
# run.html): 40 steps, a loss every 10 (a curve of 5 points), 20 eval items, two torch threads (a 2-core machine's
# default). The verifier's tests damage copies of it, the comparison's run A is this run, and nbval re-runs it on
# one thread (tests/test_notebook.py).
SHORT_PAPERMILL = {**profile("embedded"), "max_steps": 40, "eval_limit": 20, "logging_steps": 10}


def build_papermill_run(params: dict) -> Callable[[Path], None]:
    """A `shared_run` build: `params` through the papermill command into FOLDER/run with two torch threads, which
    must complete. (Runs compared with it are built the same way: the comparison names a differing variable.)"""
    def build(folder: Path) -> None:
        done = papermill_command(folder / "run", params, env={**os.environ, "OMP_NUM_THREADS": "2"})
        assert done.returncode == 0, done.stderr[-3000:]
    return build


@pytest.fixture(scope="session")
def papermill_run(shared_run) -> Path:
    """The SHORT_PAPERMILL run, sealed: tests that change it work on a copy."""
    return shared_run("short-papermill", build_papermill_run(SHORT_PAPERMILL)) / "run"


def keep_done(folder: Path, done: subprocess.CompletedProcess) -> None:
    """Keep what a shared run's command returned and printed beside its folder (done.json), for `kept_done`."""
    saved = {"returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr}
    (folder / "done.json").write_text(json.dumps(saved), encoding="utf-8")


def kept_done(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.CompletedProcess([], **json.loads((folder / "done.json").read_text(encoding="utf-8")))


def _build_invalid_parameter(folder: Path) -> None:
    """papermill with max_steps 0: a documented failure in the parameters phase."""
    keep_done(folder, papermill_command(folder / "run", {**profile("embedded"), "max_steps": 0}))


@pytest.fixture(scope="session")
def invalid_parameter_run(shared_run) -> tuple[Path, subprocess.CompletedProcess]:
    """The run folder of a papermill call with an invalid parameter, and the finished command."""
    folder = shared_run("invalid-parameter", _build_invalid_parameter)
    return folder / "run", kept_done(folder)


# The short run of the tests of a failure or a fault, through papermill: the small training file (a quick tokenizer
# and pre-flight), 12 steps with a loss at each, 16 new tokens on the first 10 eval items. Through lib.execute,
# SHORT_ARGS: 4 steps, for the tests that look at what the launcher does once the notebook has ended.
SHORT_RUN = {**profile("embedded"), "train_file": "data/dev-reasoning-v2.jsonl", "max_steps": 12, "logging_steps": 1,
             "max_new_tokens": 16, "eval_limit": 10}
SHORT_ARGS = ["-p", "max_steps=4", "-p", "logging_steps=2", "-p", "max_new_tokens=8", "-p", "eval_limit=10"]

# Two faults that leave a completed run and do not interfere, injected into one run that serves the tests of each:
# every generated output holds a character that breaks a line or does not show (tests/test_failures.py), and the
# system sampler fails at every reading (tests/test_telemetry.py). The short run on 16 eval items, a sample every
# 0.25 s.
FAULTY_COMPLETED = {**SHORT_RUN, "eval_limit": 16, "telemetry_interval_s": 0.25}


def _build_faulty_completed(folder: Path) -> None:
    done = papermill_command(folder / "run", FAULTY_COMPLETED, env=with_fault("strange_generations,sampler_error"))
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="session")
def faulty_completed_run(shared_run) -> Path:
    """The FAULTY_COMPLETED run, sealed: tests that change it work on a copy."""
    return shared_run("faulty-completed", _build_faulty_completed) / "run"


def _build_preflight_failure(folder: Path) -> None:
    """A documented pre-flight failure through the main command (the eval file does not exist): the quickest
    real run, finished and sealed by lib.execute."""
    done = launch("--params", "params/embedded.yaml", "-p", "eval_file=data/no-such-eval.jsonl",
                  "--run-dir", str(folder / "run"))
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="session")
def failed_run(shared_run) -> Path:
    """A sealed run folder of lib.execute that failed in pre-flight; tests that change it work on a copy."""
    return shared_run("preflight-failure", _build_preflight_failure) / "run"


def build_embedded(traces: list[dict], seed: int, out_dir: Path) -> Path:
    """The embedded profile's model (float32, as it trains) and its tokenizer in `out_dir`, as pre-flight builds it."""
    return build_model_from_config(model_config_path("embedded"), traces, seed, "float32", out_dir)
