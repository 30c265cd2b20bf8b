"""Stepping through the notebook (`make lab`): interactive runs are labelled, re-runs are defined, nothing stale survives.

The rules on lib.run.Run directly, with quick stand-in phases that write through the real writers; then
the real thing: JupyterLab started as `make lab` starts it, a kernel started through its sessions API,
the scratch notebook executed cell by cell, saved through the contents API while training runs, a phase
run again with a changed parameter, and the report rendered.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lib.config import REPO_ROOT, parameter_names
from lib.contract import LAB_MARKER, PHASE_FILES, PHASE_ORDER
from lib.evaluation import write_evaluation
from lib.evidence import read_json, write_json, write_text
from lib.interactive import FIRST_READ_BY
from lib.run import Refused, Run, RunFailed
from lib.verify import verify
from tests.conftest import profile
from tests.test_evaluation import eval_items, generations

OFFICIAL_DIR = REPO_ROOT / "submission_runs" / "m44_v1"
LAB = REPO_ROOT / "build" / "lab"


@pytest.fixture
def namespace(tmp_path, official_params, monkeypatch) -> dict:
    """The globals of make lab's scratch copy after its parameters cells ran; no Jupyter server around it."""
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    return {**official_params, **profile("embedded"), "run_dir": str(tmp_path / "run"), LAB_MARKER: True}


def fake_preflight(cfg, run_dir):
    for name in ("env_snapshot.txt", "gpu_snapshot.txt"):
        write_text(run_dir / name, f"{name} (stand-in)\n")
    write_json(run_dir / "preflight.json", {"checks": []})
    write_text(run_dir / "base_model" / "config.json", "{}\n")
    return "prepared"


def fake_training(cfg, run_dir, prepared):
    assert prepared == "prepared"
    history = [{"step": step, "loss": 2.0 / step} for step in range(1, cfg.max_steps + 1)]
    write_json(run_dir / "training_metrics.json", {
        "status": "completed", "steps_completed": cfg.max_steps, "runtime_s": 1.0, "history": history})
    write_text(run_dir / "training_log.txt", "".join(f"step {h['step']} loss {h['loss']}\n" for h in history))
    write_text(run_dir / "checkpoints" / "final" / "model.safetensors", "weights\n")
    return "trained"


def fake_evaluation(cfg, run_dir, prepared, trained):
    assert trained == "trained"
    return write_evaluation(run_dir, cfg, eval_items(), generations(), len(eval_items()))


def step_through(run: Run) -> None:
    """The notebook's phase cells, in order."""
    run.phase("preflight", fake_preflight)
    run.phase("training", fake_training, "prepared", needs="preflight")
    run.phase("evaluation", fake_evaluation, "prepared", "trained", needs="training")


def names(run_dir: Path) -> set[str]:
    return {p.name for p in run_dir.iterdir()}


def state(run_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(run_dir)): p.stat().st_mtime_ns for p in run_dir.rglob("*")}


def official_state() -> list[tuple[str, int]]:
    return sorted((p.name, p.stat().st_mtime_ns) for p in [OFFICIAL_DIR, *OFFICIAL_DIR.iterdir()])


# --- interactive or not ---------------------------------------------------------------------


@pytest.mark.parametrize("sign", ["JPY_SESSION_NAME", "__vsc_ipynb_file__", LAB_MARKER])
def test_an_interactive_kernel_never_claims_an_official_folder(namespace, monkeypatch, sign, official_folder):
    del namespace[LAB_MARKER]
    if sign == "JPY_SESSION_NAME":  # what a Jupyter server (JupyterLab, Notebook) puts in its kernels' environment
        monkeypatch.setenv("JPY_SESSION_NAME", str(REPO_ROOT / "notebooks" / "m44.ipynb"))
    else:
        namespace[sign] = str(REPO_ROOT / "notebooks" / "m44.ipynb") if sign.startswith("__vsc") else True
    before = official_state()
    with pytest.raises(Refused, match="m44_v1 is an official one-shot folder, and this is an interactive run"):
        Run.start({**namespace, "run_dir": "submission_runs/m44_v1"})
    assert official_state() == before  # not even claimed


def test_outside_a_kernel_a_run_is_one_shot_and_a_phase_run_again_is_refused_before_it_writes(namespace):
    del namespace[LAB_MARKER]
    run = Run.start(namespace)
    step_through(run)
    run.consolidate()
    before = state(run.dir)
    with pytest.raises(Refused, match=r"evaluation already ran in this run \(completed\), and a run started by python "
                                      r"runs each phase once: nothing was run, deleted or written; to run cells again, "
                                      r"step through an interactive run instead: `make lab`"):
        run.phase("evaluation", fake_evaluation, "prepared", "trained", needs="training")
    with pytest.raises(Refused, match="consolidation already ran in this run"):
        run.consolidate()
    assert state(run.dir) == before
    run.finish()
    assert run.launcher == "python" and run.interactive is None
    assert "interactive" not in read_json(run.dir / "phases.json")
    facts = read_json(run.dir / "m44_summary.json")
    assert facts["interactive"] is None and facts["launcher"] == "python"
    assert "nteractive" not in (run.dir / "m44_summary.md").read_text(encoding="utf-8")


def test_an_interactive_run_is_labelled_in_the_claim_the_facts_and_the_summary(namespace):
    run = Run.start(namespace)
    step_through(run)
    run.finish()
    assert read_json(run.dir / "claim.json")["launcher"] == "interactive"
    facts = read_json(run.dir / "m44_summary.json")
    assert facts["launcher"] == "interactive"
    assert facts["interactive"] == {"detected_by": "make lab's scratch copy", "starts": 1, "parameter_changes": [],
                                    "runs": {"preflight": 1, "training": 1, "evaluation": 1}}
    summary = (run.dir / "m44_summary.md").read_text(encoding="utf-8")
    assert summary.startswith("# M44 summary: COMPLETED (interactive run), not the official configuration: ")
    assert "Interactive run, stepped through cell by cell (make lab's scratch copy): not the official run." in summary
    assert verify(run.dir) == []


# --- running cells again --------------------------------------------------------------------


def test_a_phase_run_again_deletes_its_evidence_and_every_later_phase_and_unfinishes_the_run(namespace):
    run = Run.start(namespace)
    step_through(run)
    run.finish()
    preflight_files = {p: t for p, t in state(run.dir).items() if p.split("/")[0] in PHASE_FILES["preflight"]}

    run.phase("training", fake_training, "prepared", needs="preflight")
    assert names(run.dir) == {"claim.json", "config.json", "phases.json", "env_snapshot.txt", "gpu_snapshot.txt",
                              "preflight.json", "base_model", "training_metrics.json", "training_log.txt",
                              "checkpoints"}  # evaluation, summaries and manifest gone: nothing stale
    assert {p: t for p, t in state(run.dir).items() if p in preflight_files} == preflight_files  # untouched
    assert list(run.phases) == ["parameters", "preflight", "training"] and run.outcome is None
    assert "m44_summary.json: missing" in verify(run.dir)[0]  # un-finished until consolidation runs again

    run.phase("evaluation", fake_evaluation, "prepared", "trained", needs="training")
    run.phase("evaluation", fake_evaluation, "prepared", "trained", needs="training")
    run.consolidate()
    run.finish()  # consolidated again: one manifest, the latest
    assert verify(run.dir) == []
    facts = read_json(run.dir / "m44_summary.json")
    assert facts["interactive"]["runs"] == {"preflight": 1, "training": 2, "evaluation": 3}
    assert [p["name"] for p in facts["phases"]] == ["parameters", "preflight", "training", "evaluation"]
    assert "Times each phase ran: preflight 1, training 2, evaluation 3" in (
        run.dir / "m44_summary.md").read_text(encoding="utf-8")


def test_a_phase_whose_input_phase_was_reset_is_skipped_with_the_cell_to_run(namespace, capsys):
    run = Run.start(namespace)
    step_through(run)
    run.phase("training", lambda cfg, run_dir, prepared: 1 / 0, "prepared", needs="preflight")
    assert run.phase("evaluation", fake_evaluation, "prepared", "trained", needs="training") is None
    assert "SKIPPED evaluation: skipped because training failed (run the training cell first)" in capsys.readouterr().out
    assert not (run.dir / "checkpoints").exists()  # the failed re-run left no weights of the earlier one
    with pytest.raises(RunFailed, match="FAILED in phase training: ZeroDivisionError"):
        run.finish()
    assert verify(run.dir) == []


def test_a_changed_parameter_is_applied_by_the_phase_that_reads_it_and_recorded(namespace, capsys):
    namespace["max_steps"] = 3
    run = Run.start(namespace)
    step_through(run)
    run.finish()
    namespace["max_new_tokens"] = 4  # the user edits the injected parameters cell and runs it again
    run.phase("evaluation", fake_evaluation, "prepared", "trained", needs="training")
    assert "Parameters changed, applied from evaluation on: max_new_tokens 160 -> 4" in capsys.readouterr().out
    assert read_json(run.dir / "config.json")["parameters"]["max_new_tokens"] == 4
    assert read_json(run.dir / "evaluation_results.json")["max_new_tokens"] == 4
    run.finish()
    assert verify(run.dir) == []
    facts = read_json(run.dir / "m44_summary.json")
    assert facts["interactive"]["parameter_changes"] == [
        {"phase": "evaluation", "run": 2, "changed": {"max_new_tokens": [160, 4]}}]
    assert facts["config_sha256"] == run.cfg.sha256()
    assert ("Parameters changed while stepping through: max_new_tokens 160 -> 4 (applied from evaluation, run 2)."
            in (run.dir / "m44_summary.md").read_text(encoding="utf-8"))

    namespace["max_steps"] = 5  # training read it: evaluation alone cannot apply it
    before = state(run.dir)
    with pytest.raises(Refused, match=r"max_steps \(read by training\).*Run training again.*Nothing was run"):
        run.phase("evaluation", fake_evaluation, "prepared", "trained", needs="training")
    assert state(run.dir) == before  # refused before anything changed
    run.phase("training", fake_training, "prepared", needs="preflight")
    assert read_json(run.dir / "training_metrics.json")["steps_completed"] == 5


@pytest.mark.parametrize("change, message", [
    ({"run_dir": "elsewhere"}, "parameter 'run_dir' changed .* run the first code cell again"),
    ({"max_new_tokens": 0}, r"parameter 'max_new_tokens' must be >= 1, got 0 \(changed in the notebook"),
    ({"device": "cuda", "dtype": "bfloat16"}, r"device \(read by preflight\), dtype \(read by preflight\)"),
], ids=["run_dir", "invalid", "read by pre-flight"])
def test_a_parameter_change_that_cannot_apply_is_refused_and_changes_nothing(namespace, change, message):
    run = Run.start(namespace)
    step_through(run)
    run.finish()
    before = state(run.dir)
    namespace.update(change)
    with pytest.raises(Refused, match=message):
        run.phase("evaluation", fake_evaluation, "prepared", "trained", needs="training")
    assert state(run.dir) == before


def test_a_misspelt_parameter_is_named_not_ignored(namespace, capsys):
    run = Run.start(namespace)
    run.phase("preflight", fake_preflight)
    namespace["max_new_token"] = 4
    run.phase("training", fake_training, "prepared", needs="preflight")
    assert "note: 'max_new_token' is not a parameter and changes nothing; did you mean 'max_new_tokens'?" in (
        capsys.readouterr().out)


def test_the_first_cell_run_again_starts_over_in_the_same_folder(namespace, capsys):
    run = Run.start(namespace)
    step_through(run)
    run.finish()
    again = Run.start(namespace)  # the same kernel runs the first code cell again
    assert again.dir == run.dir and names(run.dir) == {"claim.json", "config.json", "phases.json"}
    assert "Starting the run over in" in capsys.readouterr().out
    assert again.interactive.starts == 2 and again.interactive.runs == {}
    step_through(again)
    again.finish()
    assert read_json(run.dir / "m44_summary.json")["interactive"]["starts"] == 2
    assert verify(run.dir) == []


def test_a_folder_another_running_kernel_uses_is_refused_and_a_dead_kernels_is_taken_over(namespace):
    run = Run.start(namespace)
    claim = read_json(run.dir / "claim.json")
    write_json(run.dir / "claim.json", {**claim, "pid": os.getppid()})  # a process that runs: another kernel
    before = state(run.dir)
    with pytest.raises(Refused, match=f"in use by another running kernel \\(pid {os.getppid()}"):
        Run.start(namespace)
    assert state(run.dir) == before
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    write_json(run.dir / "claim.json", {**claim, "pid": int(ended.stdout)})  # a kernel since restarted
    assert Run.start(namespace).interactive.starts == 2


def test_an_interactive_kernel_refuses_a_folder_holding_another_kind_of_run(namespace, tmp_path):
    papermill_run = Run.start({**{k: v for k, v in namespace.items() if k != LAB_MARKER},
                               "run_dir": str(tmp_path / "batch")})
    before = state(papermill_run.dir)
    with pytest.raises(Refused, match="already holds a run"):
        Run.start({**namespace, "run_dir": str(tmp_path / "batch")})
    assert state(papermill_run.dir) == before


# --- the map of which phase reads which parameter ------------------------------------------


def parameters_read(module: str, seen: set[str] | None = None) -> set[str]:
    """Every `cfg.<name>` and `cfg.path("<name>")` in a lib module and the lib modules it imports, at any depth."""
    seen = set() if seen is None else seen
    seen.add(module)
    tree = ast.parse((REPO_ROOT / "lib" / f"{module}.py").read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and getattr(node.value, "id", None) == "cfg":
            found.add(node.attr)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "path"
                and getattr(node.func.value, "id", None) == "cfg" and isinstance(node.args[0], ast.Constant)):
            found.add(node.args[0].value)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lib."):
            imported = node.module.split(".")[1]
            if imported not in seen:
                found |= parameters_read(imported, seen)
    return found & set(parameter_names())


def test_each_parameter_is_first_read_by_the_phase_the_rerun_rules_say():
    """A parameter said to be read first by training or evaluation must not be read by an earlier phase's code."""
    read_by = {"preflight": parameters_read("preflight"),
               "training": parameters_read("training") | parameters_read("training_worker"),
               "evaluation": parameters_read("evaluation")}
    for name, phase in FIRST_READ_BY.items():
        assert name in read_by[phase], f"{name}: not read by {phase}"
        earlier = [p for p in PHASE_ORDER[1:PHASE_ORDER.index(phase)] if name in read_by[p]]
        assert not earlier, f"{name} is read by {earlier}, before {phase}: change FIRST_READ_BY in lib/run.py"


# --- the real thing: JupyterLab, a kernel, the notebook cell by cell ------------------------

LAB_RUN = ["-p", "max_steps=30", "-p", "logging_steps=2", "-p", "max_new_tokens=8"]
INSPECT = """\
import os
from lib.generation import generate_greedy
from lib.model_loading import load_model, load_tokenizer
tokenizer = load_tokenizer(str(trained.model_dir))
model = load_model(str(trained.model_dir), run.cfg, tokenizer)
print(os.getcwd(), prepared.model_source == str(run.dir / "base_model"), trained.model_dir.name, sorted(p.name for p in run.dir.iterdir()))
print(generate_greedy(model, tokenizer, ["What is 6 × 7?"], batch_size=1, max_new_tokens=8)[0]["output"])
"""


class Lab:
    """JupyterLab as `make lab` starts it, and what the tests need to drive it as a browser would."""

    def __init__(self, proc: subprocess.Popen, server: dict, notebook: Path, run_dir: Path, runtime: Path):
        self.proc, self.server, self.notebook, self.run_dir, self.runtime = proc, server, notebook, run_dir, runtime

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        import urllib.request

        request = urllib.request.Request(
            f"http://127.0.0.1:{self.server['port']}{path}", method=method,
            data=None if body is None else json.dumps(body).encode("utf-8"),
            headers={"Authorization": f"token {self.server['token']}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            text = response.read().decode("utf-8")
        return json.loads(text) if response.headers.get_content_type() == "application/json" and text else {}

    def save(self, nb) -> None:
        """What JupyterLab does on Ctrl-S (autosave is the same PUT, without the checkpoint)."""
        import nbformat

        self.api("PUT", f"/api/contents/{self.notebook.name}",
                 {"type": "notebook", "format": "json", "content": json.loads(nbformat.writes(nb))})
        self.api("POST", f"/api/contents/{self.notebook.name}/checkpoints")


def repository_state(run_dir: Path) -> tuple[dict, dict[str, int]]:
    """git's view (as the repository guard sees it) and every file's mtime, leaving out the run and build/lab/."""
    from lib.repository import describe_repository
    from tests.test_failures import repository_files

    scratch = (run_dir.relative_to(REPO_ROOT).as_posix() + "/", "build/lab/")
    described = describe_repository()
    files = {path: mtime for path, mtime in repository_files().items()
             if not Path(path).as_posix().startswith(scratch)}
    return {k: described[k] for k in ("status", "diff_sha256")}, files


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """`make lab` on the embedded profile with a short run: the scratch copy, its run folder, JupyterLab serving it."""
    pytest.importorskip("jupyterlab", reason="make lab installs JupyterLab (requirements-lab.txt)")
    runtime = tmp_path_factory.mktemp("jupyter")
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime), "JUPYTER_CONFIG_DIR": str(runtime / "config"),
           "JUPYTER_DATA_DIR": str(runtime / "data"), "IPYTHONDIR": str(runtime / "ipython")}
    env.pop("JPY_SESSION_NAME", None)
    root = ["--allow-root"] if getattr(os, "geteuid", lambda: 1)() == 0 else []  # CI runs as root
    log = runtime / "lab.log"
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lib.lab", "start", "--params", "params/embedded.yaml", *LAB_RUN,
             "--no-browser", "--port=0", "--IdentityProvider.token=m44-test-token", *root],
            cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    info = runtime / f"jpserver-{proc.pid}.json"
    deadline = time.monotonic() + 300  # a bound on the wait, not a measurement
    while not info.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    text = log.read_text(encoding="utf-8")
    lines = dict(line.split(": ", 1) for line in text.splitlines() if line.startswith(("Notebook: ", "Run folder: ")))
    notebook, run_dir = Path(lines.get("Notebook", "-")), Path(lines.get("Run folder", "-"))
    try:
        assert info.exists(), f"JupyterLab did not start:\n{text[-3000:]}"
        yield Lab(proc, json.loads(info.read_text(encoding="utf-8")), notebook, run_dir, runtime)
    finally:
        proc.terminate()  # SIGTERM: Jupyter shuts its kernels down and stops
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        if notebook.parent == LAB:
            notebook.unlink(missing_ok=True)
            (LAB / ".ipynb_checkpoints" / f"{notebook.stem}-checkpoint.ipynb").unlink(missing_ok=True)
        if run_dir.parent == REPO_ROOT / "submission_runs" and run_dir.name.startswith("interactive-"):
            shutil.rmtree(run_dir, ignore_errors=True)


@pytest.mark.notebook
def test_make_lab_prepares_a_scratch_copy_and_a_new_run_folder_and_serves_them(lab):
    assert lab.notebook.parent == LAB
    assert lab.run_dir.parent == REPO_ROOT / "submission_runs" and lab.run_dir.name.startswith("interactive-embedded-")
    assert lab.notebook.stem == lab.run_dir.name and list(lab.run_dir.iterdir()) == []  # claimed by the first cell
    assert lab.api("GET", "/api/status")["started"]
    assert lab.server["root_dir"] == str(LAB)  # Lab can save nothing tracked
    served = lab.api("GET", f"/api/contents/{lab.notebook.name}")["content"]
    injected = next(c for c in served["cells"] if "injected-parameters" in c["metadata"].get("tags", []))
    assert "max_steps = 30\n" in injected["source"] and f'run_dir = "submission_runs/{lab.run_dir.name}"' in injected["source"]
    assert any(f"%autoreload all\n{LAB_MARKER} = True" in c["source"] for c in served["cells"])
    assert served["metadata"]["papermill"]["parameters"]["run_dir"] == f"submission_runs/{lab.run_dir.name}"


class Kernel:
    """A kernel the Jupyter server started for the scratch notebook, driven as JupyterLab drives it.

    nbclient turns the kernel's messages into the notebook's outputs (display updates included), so the
    notebook saved through the contents API is what JupyterLab would save.
    """

    def __init__(self, lab: Lab):
        import nbformat
        from jupyter_client import BlockingKernelClient
        from nbclient import NotebookClient

        session = lab.api("POST", "/api/sessions", {"path": lab.notebook.name, "name": lab.notebook.name,
                                                    "type": "notebook", "kernel": {"name": "python3"}})
        self.client = BlockingKernelClient()
        self.client.load_connection_file(lab.runtime / f"kernel-{session['kernel']['id']}.json")
        self.client.start_channels(hb=False)  # the server watches the kernel; a busy machine misses heartbeats
        self.client.wait_for_ready(timeout=300)
        self.nb = nbformat.read(lab.notebook, as_version=4)
        self.outputs = NotebookClient(self.nb, record_timing=False)  # its process_message keeps the outputs as a notebook does

    def close(self) -> None:
        """Stop the channels and their zmq context now: left to the garbage collector, a context with open
        sockets blocks the collecting thread (a later test's gc.collect()) for good."""
        self.client.stop_channels()
        self.client.context.destroy(linger=0)

    def index(self, text: str) -> int:
        return next(i for i, c in enumerate(self.nb.cells) if c.cell_type == "code" and text in c.source)

    def run(self, index: int, on_output=None) -> dict:
        """Execute one cell as Shift-Enter does; the reply's content (status, ename, evalue)."""
        from nbclient.exceptions import CellExecutionComplete

        cell = self.nb.cells[index]
        cell.outputs = []  # a cell run again starts empty, and its old outputs no longer take display updates
        self.outputs.clear_display_id_mapping(index)
        self.outputs.clear_before_next_output = False  # per cell, as nbclient's own execute_cell starts one

        def hook(msg):
            try:
                output = self.outputs.process_message(msg, cell, index)
            except CellExecutionComplete:
                return
            if output is not None and on_output is not None:
                on_output(output)

        return self.client.execute_interactive(cell.source, output_hook=hook, timeout=900)["content"]

    def printed(self, index: int) -> str:
        return "".join(o.get("text", "") for o in self.nb.cells[index].outputs if o.output_type == "stream")

    def console(self, code: str) -> str:
        """Code typed in a console on the same kernel: not a cell of the notebook."""
        out: list[str] = []
        reply = self.client.execute_interactive(code, timeout=600, output_hook=lambda m: out.append(
            m["content"].get("text", "") if m["msg_type"] == "stream" else ""))
        assert reply["content"]["status"] == "ok", reply["content"]
        return "".join(out)


@pytest.fixture
def kernel(lab):
    kernel = Kernel(lab)
    yield kernel
    kernel.close()


@pytest.mark.notebook
def test_stepping_through_in_jupyterlab_re_running_evaluation_with_a_changed_parameter(lab, kernel, official_folder):
    """The cells in order, a save while training runs, evaluation again with max_new_tokens changed, the report."""
    before = repository_state(lab.run_dir)
    first = kernel.index("Run.start(globals())")
    for index in range(first + 1):  # the autoreload cell, the parameters, the injected ones, the first cell
        if kernel.nb.cells[index].cell_type == "code":
            assert kernel.run(index)["status"] == "ok", kernel.nb.cells[index].outputs
    assert "Interactive run (make lab's scratch copy; a Jupyter server's session on" in kernel.printed(first)

    saved = []

    def autosave(output):  # the first training step printed: the worker is training; save as autosave does
        if not saved and "step" in output.get("text", ""):
            lab.save(kernel.nb)
            saved.append(output["text"])

    for phase, text in (("preflight", 'run.phase("preflight"'), ("training", 'run.phase("training"'),
                        ("evaluation", 'run.phase("evaluation"')):
        present = {p.name for p in lab.run_dir.iterdir()}
        assert kernel.run(kernel.index(text), autosave if phase == "training" else None)["status"] == "ok"
        assert f"completed {phase} in" in kernel.printed(kernel.index(text))
        new = {p.name for p in lab.run_dir.iterdir()} - present
        assert new <= set(PHASE_FILES[phase]) | {"claim.json", "phases.json"}, f"{phase} wrote {new}: list them in PHASE_FILES"
    assert saved, "training printed no step"
    assert (LAB / ".ipynb_checkpoints" / f"{lab.notebook.stem}-checkpoint.ipynb").is_file()  # beside the copy, scratch

    inspected = kernel.console(INSPECT)  # README: the live objects between cells
    assert inspected.startswith(f"{LAB} True final [") and "generate: 1/1 items" in inspected

    injected = next(i for i, c in enumerate(kernel.nb.cells) if "injected-parameters" in c.metadata.get("tags", []))
    kernel.nb.cells[injected].source = kernel.nb.cells[injected].source.replace("max_new_tokens = 8", "max_new_tokens = 4")
    assert kernel.run(injected)["status"] == "ok"
    evaluation = kernel.index('run.phase("evaluation"')
    assert kernel.run(evaluation)["status"] == "ok"
    printed = kernel.printed(evaluation)
    assert "Parameters changed, applied from evaluation on: max_new_tokens 8 -> 4" in printed
    assert "evaluation runs again: deleted the evidence of evaluation" in printed and "completed evaluation" in printed
    for index in range(evaluation + 1, len(kernel.nb.cells)):  # consolidation, the outcome, finish
        if kernel.nb.cells[index].cell_type == "code":
            assert kernel.run(index)["status"] == "ok", kernel.nb.cells[index].outputs
    assert "verification of the run folder: OK" in kernel.printed(len(kernel.nb.cells) - 1)
    lab.save(kernel.nb)

    done = subprocess.run([sys.executable, "-m", "lib.lab", "render", str(lab.notebook)], cwd=REPO_ROOT,
                          capture_output=True, text=True, encoding="utf-8", timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    done = subprocess.run([sys.executable, "-m", "lib.verify", str(lab.run_dir)], cwd=REPO_ROOT,
                          capture_output=True, text=True, encoding="utf-8", timeout=300)
    assert done.returncode == 0 and "OK:" in done.stdout, done.stdout + done.stderr
    facts = read_json(lab.run_dir / "m44_summary.json")
    assert facts["status"] == "completed" and facts["repository"]["unchanged"], facts["repository"]
    assert facts["interactive"]["runs"] == {"preflight": 1, "training": 1, "evaluation": 2}
    assert facts["interactive"]["parameter_changes"] == [
        {"phase": "evaluation", "run": 2, "changed": {"max_new_tokens": [8, 4]}}]
    assert read_json(lab.run_dir / "evaluation_results.json")["max_new_tokens"] == 4
    assert read_json(lab.run_dir / "manifest.json")["final"] is True
    report = (lab.run_dir / "run.html").read_text(encoding="utf-8")
    assert "COMPLETED (interactive run)</span> M44 run" in report  # the card at the top of the report
    assert "Times each phase ran: preflight 1, training 1, evaluation 2" in report

    official = official_state()  # an official folder refuses the interactive kernel, whatever its run_dir says
    kernel.console('run_dir = "submission_runs/m44_v1"')
    reply = kernel.run(first)
    assert reply["status"] == "error" and reply["ename"] == "Refused"
    assert "m44_v1 is an official one-shot folder, and this is an interactive run" in reply["evalue"]
    assert official_state() == official
    assert repository_state(lab.run_dir) == before  # nothing outside the run folder and build/lab/ changed


@pytest.mark.notebook
def test_a_kernel_a_script_drives_cell_by_cell_is_an_interactive_run_and_may_run_a_phase_again(tmp_path):
    """nbclient driving a kernel cell by cell, as a script, an IDE's notebook runner or `jupyter console` do: no
    JPY_SESSION_NAME, no VS Code variables, not papermill's command. The run is interactive, labelled so, and the
    evaluation cell run again after a parameter change re-runs evaluation with no stale evidence left."""
    import nbclient
    import nbformat
    import papermill

    run_dir = tmp_path / "run"
    copy = tmp_path / "stepped.ipynb"
    papermill.execute_notebook(str(REPO_ROOT / "notebooks" / "m44.ipynb"), str(copy), prepare_only=True,
                               parameters={**profile("embedded"), "max_steps": 6, "logging_steps": 3,
                                           "max_new_tokens": 8, "eval_limit": 4, "run_dir": str(run_dir)})
    nb = nbformat.read(copy, as_version=4)
    client = nbclient.NotebookClient(nb, resources={"metadata": {"path": str(REPO_ROOT)}}, kernel_name="python3")
    code = [n for n, cell in enumerate(nb.cells) if cell.cell_type == "code"]
    evaluation = next(n for n in code if 'run.phase("evaluation"' in nb.cells[n].source)
    with client.setup_kernel(env={k: v for k, v in os.environ.items() if k != "JPY_SESSION_NAME"}):
        for n in code:
            client.execute_cell(nb.cells[n], n)
        first = read_json(run_dir / "evaluation_results.json")
        assert verify(run_dir) == []
        nb.cells.append(nbformat.v4.new_code_cell("max_new_tokens = 4"))  # a cell the user adds at the end
        client.execute_cell(nb.cells[-1], len(nb.cells) - 1)
        for n in [m for m in code if m >= evaluation]:  # evaluation again, then consolidation and finish
            client.execute_cell(nb.cells[n], n)
    again = read_json(run_dir / "evaluation_results.json")
    assert (first["max_new_tokens"], again["max_new_tokens"]) == (8, 4)
    assert verify(run_dir) == []
    facts = read_json(run_dir / "m44_summary.json")
    assert facts["launcher"] == "interactive" and facts["interactive"]["runs"]["evaluation"] == 2
    assert "not by papermill's command or lib.execute" in facts["interactive"]["detected_by"]
    assert "Interactive run, stepped through cell by cell" in (run_dir / "m44_summary.md").read_text(encoding="utf-8")
