"""The code's shape: every module in one layer, imports point down (no cycles), the package imports nothing, and the
evidence core needs no torch, and a run's processes start without what they do not use."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lib.config import REPO_ROOT

LIB = REPO_ROOT / "lib"
HEAVY = ("torch", "transformers", "pandas", "datasets", "matplotlib", "IPython", "peft")

# The layers, bottom up: a module imports only from its own layer and those below it. lib/__init__.py shows the
# same table to a reader; every module of lib/ is in exactly one layer.
LAYERS = {
    "leaves": {"contract", "redaction", "units", "printable", "console", "keep_awake"},
    "evidence core": {"config", "evidence", "run_folder", "repository", "rehearsal", "data", "scoring", "stats",
                      "results", "summary", "model_card", "verify", "telemetry_summary"},
    "building": {"prompt_format", "model_loading", "model_builder", "gguf_model", "model_source", "generation",
                 "resources", "throughput", "cpu_bfloat16", "snapshot", "plots", "launcher", "progress",
                 "telemetry", "nvml", "lora"},
    "phases": {"preflight", "training", "evaluation", "consolidation"},
    "the run": {"run", "interactive", "report"},
    "entry points": {"execute", "lab", "reevaluate", "data_check", "compare", "training_worker",
                     "evaluation_worker"},
}
# The torch-free evidence core: `python -m lib.verify` on a committed run folder needs neither torch nor a model.
TORCH_FREE = LAYERS["leaves"] | LAYERS["evidence core"]


def lib_imports(path: Path) -> set[str]:
    """The lib modules a module imports, at any depth of its code, except under `if TYPE_CHECKING:` (annotations only)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
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


def layer_of(module: str) -> int:
    return next(n for n, modules in enumerate(LAYERS.values()) if module in modules)


def test_every_module_is_in_one_layer():
    modules = set(import_graph())
    listed = [m for layer in LAYERS.values() for m in layer]
    assert len(listed) == len(set(listed)), "a module is in two layers"
    assert modules - set(listed) == set(), "add these modules to LAYERS (and to lib/__init__.py's table)"
    assert set(listed) - modules == set(), "these modules in LAYERS do not exist"


def test_imports_point_down_or_across():
    upward = [f"{module} ({name}) imports {dep} ({list(LAYERS)[layer_of(dep)]})"
              for module, deps in import_graph().items() for dep in deps
              for name in [list(LAYERS)[layer_of(module)]] if layer_of(dep) > layer_of(module)]
    assert upward == []


def test_the_package_docstring_shows_the_layer_table():
    doc = ast.get_docstring(ast.parse((LIB / "__init__.py").read_text(encoding="utf-8")))
    rows = {}
    for line in doc.splitlines():
        if line.startswith("    ") and not line.startswith("     ") and line.strip():
            name = " ".join(line.split()[:2]) if line.split()[0] in ("evidence", "entry", "the") else line.split()[0]
            rows[name] = line.removeprefix("    " + name)
        elif line.startswith("     ") and rows:
            rows[list(rows)[-1]] += " " + line.strip()
    words = {layer: set(re.findall(r"[a-z_0-9]+", text)) for layer, text in rows.items()}
    for layer, modules in LAYERS.items():
        assert layer in words, f"lib/__init__.py has no row for {layer!r}"
        assert modules <= words[layer], f"lib/__init__.py's {layer!r} row lacks {sorted(modules - words[layer])}"


def test_the_architecture_page_shows_the_same_layers():
    """docs/ARCHITECTURE.md's table names exactly the modules of each layer (the workers are entry points)."""
    page = (REPO_ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| ([a-z ]+) \| (.+?) \| .+ \|$", page, re.M))
    for layer, modules in LAYERS.items():
        assert set(re.findall(r"`(\w+)`", rows[layer])) == modules, layer


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


def test_the_package_imports_no_other_module():
    tree = ast.parse((LIB / "__init__.py").read_text(encoding="utf-8"))
    imported = {alias.name for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names}
    assert imported == {"warnings"} and not [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    done = subprocess.run([sys.executable, "-c", "import sys, lib; print(sorted(m for m in sys.modules if m.startswith('lib')))"],
                          cwd=REPO_ROOT, capture_output=True, text=True, encoding="utf-8", check=True)
    assert done.stdout.strip() == "['lib']"


def test_the_evidence_core_imports_no_torch():
    code = "; ".join(f"import lib.{module}" for module in sorted(TORCH_FREE))
    done, modules = imported_by(["-c", code])
    assert done.returncode == 0, done.stderr[-2000:]
    assert {f"lib.{m}" for m in TORCH_FREE} <= modules  # the walk sees lib's imports at all
    assert not {m.split(".")[0] for m in modules} & set(HEAVY), sorted(m for m in modules if m.split(".")[0] in HEAVY)[:5]


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


# What the run's processes import at their start, each started once or more per run: peft only where an adapter is
# made or loaded (the Trainer's worker imports it anyway, through transformers), matplotlib only where a plot is
# drawn. Each costs a process about 1 s (docs/BENCHMARKS.md, "Starting a run's processes").
STARTS = {
    "the evaluation worker": ("import lib.evaluation_worker", {"peft", "matplotlib"}),
    "the notebook's kernel": ("from lib import report, evaluation, preflight, training; import lib.run", {"peft"}),
}


@pytest.mark.parametrize("process", STARTS)
def test_a_processs_start_imports_nothing_a_full_fine_tune_does_not_use(process):
    code, unused = STARTS[process]
    done, modules = imported_by(["-c", code])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "torch" in modules  # the walk sees the third-party imports at all
    assert not {m.split(".")[0] for m in modules} & unused, sorted(m for m in modules if m.split(".")[0] in unused)[:5]


def test_every_name_tools_and_bench_scripts_import_from_lib_exists():
    """tools/ and bench/ are run by hand, rarely: a renamed module or function of lib/ (or tools/) they import must
    fail here, not on the day someone runs them."""
    for path in sorted([*(REPO_ROOT / "tools").glob("*.py"), *(REPO_ROOT / "bench").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("lib", "tools", "tests"):
                module = importlib.import_module(node.module)
                missing = [a.name for a in node.names if not hasattr(module, a.name) and not (
                    hasattr(module, "__path__") and importlib.util.find_spec(f"{node.module}.{a.name}"))]
                assert not missing, f"{path.relative_to(REPO_ROOT)}: {node.module} has no {missing}"
