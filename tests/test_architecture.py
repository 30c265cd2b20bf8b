"""The code's shape: imports point down (no cycles), the package imports nothing, the verifier needs no torch,
and the notebook's displays cannot change how a run ends."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import papermill
import pytest

from lib.config import REPO_ROOT
from lib.contract import REQUIRED_ALWAYS, REQUIRED_ON_FAILURE, REQUIRED_ON_SUCCESS
from lib.verify import verify
from tests.conftest import NOTEBOOK, profile

LIB = REPO_ROOT / "lib"
HEAVY = ("torch", "transformers", "pandas", "datasets", "matplotlib", "IPython")


def lib_imports(path: Path) -> set[str]:
    """The lib modules a module imports, at any depth of its code.

    Except under `if TYPE_CHECKING:` (annotations only) and `if __name__ == "__main__":` (run only when the
    module is the program: `python -m lib.data check` hands over to lib.datacheck, which imports lib.data).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and (getattr(node.test, "id", None) == "TYPE_CHECKING"
                                         or "__main__" in ast.unparse(node.test)):
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lib":
            if node.module == "lib":
                found.update(alias.name for alias in node.names)
            else:
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("lib."))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found - {path.stem}


def import_graph() -> dict[str, set[str]]:
    return {p.stem: lib_imports(p) for p in sorted(LIB.glob("*.py")) if p.stem != "__init__"}


def test_no_import_cycle_in_lib():
    graph = import_graph()
    assert graph["verify"] and graph["run"]  # the walk finds imports at all
    state: dict[str, str] = {}

    def walk(module: str, path: list[str]) -> None:
        state[module] = "open"
        for dep in sorted(graph.get(module, ())):
            assert state.get(dep) != "open", "import cycle: " + " -> ".join(path + [module, dep])
            if dep not in state:
                walk(dep, path + [module])
        state[module] = "done"

    for module in graph:
        if module not in state:
            walk(module, [])


def test_leaves_import_no_other_lib_module():
    graph = import_graph()
    assert graph["contract"] == set()
    assert graph["evidence"] <= {"contract", "redaction"} and graph["redaction"] == set()


def test_the_package_imports_nothing():
    tree = ast.parse((LIB / "__init__.py").read_text(encoding="utf-8"))
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    done = subprocess.run([sys.executable, "-c", "import sys, lib; print(sorted(m for m in sys.modules if m.startswith('lib')))"],
                          cwd=REPO_ROOT, capture_output=True, text=True, encoding="utf-8", check=True)
    assert done.stdout.strip() == "['lib']"


def imported_by(args: list[str], cwd: Path = REPO_ROOT) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run `python -X importtime ARGS` and return the names of every module it imported."""
    done = subprocess.run([sys.executable, "-X", "importtime", *args], cwd=cwd, capture_output=True, text=True,
                          encoding="utf-8")
    modules = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    return done, modules


def test_the_verifier_imports_neither_torch_nor_transformers(tmp_path):
    (tmp_path / "m44_summary.md").write_text("# M44 summary\n", encoding="utf-8")  # a (broken) run folder
    done, modules = imported_by(["-m", "lib.verify", str(tmp_path)])
    assert done.returncode == 1 and "FAILED" in done.stdout, done.stdout + done.stderr[-2000:]
    assert "lib.verify" in modules or "lib.results" in modules  # the walk sees lib's imports at all
    assert not {m.split(".")[0] for m in modules} & set(HEAVY), sorted(m for m in modules if m.split(".")[0] in HEAVY)[:5]


def run_notebook(run_dir: Path, params: dict, fault: str | None) -> bool:
    """papermill on the embedded default; True when it completed, False when it ended failed."""
    env_before = dict(os.environ)
    if fault:
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT / "tests" / "faults"),
                                                                 os.environ.get("PYTHONPATH")]))
        os.environ["M44_FAULT"] = fault
    run_dir.mkdir(parents=True)
    try:
        papermill.execute_notebook(str(NOTEBOOK), str(run_dir / "run.ipynb"), cwd=str(REPO_ROOT), progress_bar=False,
                                   parameters={**profile("embedded"), **params, "run_dir": str(run_dir)})
        return True
    except papermill.PapermillExecutionError:
        return False
    finally:
        os.environ.clear()
        os.environ.update(env_before)


@pytest.mark.notebook
@pytest.mark.parametrize("params, completes", [
    ({"max_steps": 6, "logging_steps": 3, "max_new_tokens": 8}, True),
    ({"eval_file": "data/no-such-eval.jsonl"}, False),
], ids=["completed run", "failed run"])
def test_a_failing_display_changes_nothing_about_the_run(tmp_path, params, completes):
    outcomes = {}
    for fault in (None, "display_error"):
        run_dir = tmp_path / (fault or "plain")
        outcomes[fault] = run_notebook(run_dir, params, fault)
        names = {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file()}
        facts = json.loads((run_dir / "m44_summary.json").read_text(encoding="utf-8"))
        outcomes[fault] = (outcomes[fault], facts["status"], names)
        assert verify(run_dir) == [], fault
        required = REQUIRED_ALWAYS + (REQUIRED_ON_SUCCESS if completes else REQUIRED_ON_FAILURE)
        assert set(required) <= names, fault
    assert outcomes[None] == outcomes["display_error"]
    assert outcomes[None][0] is completes
    notebook = (tmp_path / "display_error" / "run.ipynb").read_text(encoding="utf-8")
    assert "display failed (injected by the test)" in notebook  # it did fail, and said so
