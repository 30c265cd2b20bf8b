"""Step through the notebook in JupyterLab: a scratch copy with a profile's parameters, and a new interactive run.

    make lab                                               # the embedded profile; PROFILE=params/<profile>.yaml for another
    python -m lib.lab start [--params FILE] [-p NAME=VALUE ...] [--run-dir DIR] [JupyterLab options, e.g. --port=8899]
    python -m lib.lab prepare [--params FILE] [-p NAME=VALUE ...] [--run-dir DIR]   # the scratch copy only
    python -m lib.lab open build/lab/<name>.ipynb          # JupyterLab again, on a scratch copy made earlier
    python -m lib.lab render build/lab/<name>.ipynb        # the report of a finished interactive run

The scratch copy is papermill's parameterized notebook (`prepare_only`: the parameters injected after the
parameters cell, nothing executed) in build/lab/, which git and the repository guard leave out, with one
cell added that turns on IPython's autoreload (a fix in lib/ applies at the next cell) and marks the run
interactive (lib/run.py). Its run folder is a new submission_runs/interactive-<profile>-<UTC time>/.
JupyterLab serves build/lab/ alone: whatever it saves (the notebook, autosaves, the .ipynb_checkpoints/
folder beside it) is scratch, and it cannot rewrite a tracked file. Edit lib/ in your editor.

`render` copies the saved notebook into the run folder as run.ipynb, renders run.html as lib.execute
does, rewrites the manifest as final (both hashed) and verifies the folder.

Exit status: 0 done; 1 the rendered folder does not verify; 2 refused before anything was written (a bad
parameter, a used or official folder, JupyterLab not installed, a notebook not saved after its last cell).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lib import run_folder
from lib.config import PROFILES, REPO_ROOT, load_config, parse_override, read_profile, resolve_path
from lib.console import utf8_output
from lib.contract import INTERACTIVE, LAB_MARKER, NOTEBOOK as NOTEBOOK_NAME, REPORT, SUMMARY_FACTS
from lib.evidence import read_json, write_manifest, write_text
from lib.execute import NOTEBOOK, new_run_dir, render_html
from lib.summary import outcome_line
from lib.verify import check_notebook_outcome, verify

LAB = REPO_ROOT / "build" / "lab"  # ignored by git and by the repository guard: saving here changes nothing
DEFAULT_PROFILE = PROFILES / "embedded.yaml"

GUIDE = """## Stepping through (this cell and the next were added by `make lab`)

A scratch copy of `notebooks/m44.ipynb`: the profile's parameters are injected below the parameters cell,
and the run folder is new and interactive (never an official one). Run the cells in order. Running a
cell again is defined: the cell with Run.start starts the run over in the same folder; a phase's cell deletes
that phase's evidence and every later phase's, then runs it; a changed parameter is applied by the phase
that reads it, or refused with a message. Edits to `lib/` apply at the next cell. After the last cell,
save (Ctrl-S) and render the report: `python -m lib.lab render <this notebook>`.
README: "Stepping through the notebook"."""

AUTORELOAD = f"""# IPython's autoreload: a lib/ module whose file changed is reloaded before each cell runs, so a fix
# in lib/ applies when you run the phase's cell again, without restarting the kernel.
%load_ext autoreload
%autoreload all
{LAB_MARKER} = True  # marks the run interactive (lib/run.py), whichever Jupyter client runs this copy"""


def prepare(profile: Path, overrides: dict, run_dir: Path | None = None) -> tuple[Path, Path]:
    """Validate the parameters, then create the run folder and the scratch copy; (notebook, run folder).

    Raises ValueError (a bad parameter, an official or misplaced folder) or FileExistsError (a used folder,
    an existing scratch copy) before anything is written.
    """
    import nbformat
    import papermill

    if run_dir is None:
        run_dir = new_run_dir(f"interactive-{profile.stem}").relative_to(REPO_ROOT)
    params = {**read_profile(profile), **overrides, "run_dir": Path(run_dir).as_posix()}
    load_config(profile, params)  # every parameter validated by name before anything is written
    folder = resolve_path(run_dir)
    if run_folder.is_official(folder):
        raise ValueError(f"--run-dir {run_dir} is an official one-shot folder; an interactive run never writes there "
                         "(leave --run-dir out for a new submission_runs/interactive-... folder)")
    run_folder.check_location(folder)
    run_folder.refuse_used_folder(folder)
    notebook = LAB / f"{folder.name}.ipynb"
    if notebook.exists():
        raise FileExistsError(f"{notebook} exists: open it with python -m lib.lab open {notebook}, or choose "
                              "another --run-dir")
    folder.mkdir(parents=True, exist_ok=True)  # now, so that the next `make lab` gets another name
    LAB.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(str(NOTEBOOK), str(notebook), parameters=params, prepare_only=True,
                               progress_bar=False)
    nb = nbformat.read(notebook, as_version=4)
    nb.cells[1:1] = [nbformat.v4.new_markdown_cell(GUIDE), nbformat.v4.new_code_cell(AUTORELOAD)]  # after the title
    nbformat.write(nb, notebook)
    return notebook, folder


def serve(notebook: Path, jupyter_args: list[str]) -> int:
    """JupyterLab on build/lab/, opening `notebook`; returns when the server stops (Ctrl-C, File > Shut Down)."""
    try:
        from jupyterlab.labapp import LabApp
    except ImportError:
        print("lib.lab: JupyterLab is not installed: make lab installs it "
              "(or: python -m pip install -r requirements-lab.txt)", file=sys.stderr)
        return 2
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"  # its kernels inherit it: no bytecode caches in lib/
    # The kernel's working directory is the notebook's folder, Jupyter's default; lib resolves its paths
    # against the repository root (lib/config.py) and imports through the editable install.
    LabApp.launch_instance([f"--ServerApp.root_dir={LAB}", *jupyter_args, str(notebook)])  # opens the notebook
    return 0


def render(notebook: Path, run_dir: Path | None = None) -> int:
    """The report of a finished interactive run from its saved notebook: run.ipynb, run.html, final manifest, verified."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    if run_dir is None:
        try:
            run_dir = resolve_path(nb.metadata["papermill"]["parameters"]["run_dir"])
        except KeyError:
            return refuse(f"{notebook} is not a scratch copy made by make lab (no run_dir in its papermill "
                          "metadata); name the run folder with --run-dir")
    claim = run_folder.read_claim(run_dir)
    if claim is None or claim.launcher != INTERACTIVE:
        return refuse(f"{run_dir} holds no interactive run ({'claimed by ' + claim.launcher if claim else 'unclaimed'}); "
                      "lib.lab render renders interactive runs only (lib.execute renders its own)")
    if not (run_dir / SUMMARY_FACTS).exists():
        return refuse(f"{run_dir} is not consolidated: run the notebook's last cells (consolidation, then "
                      "run.finish()), save the notebook, and render again")
    facts = read_json(run_dir / SUMMARY_FACTS)
    write_text(run_dir / NOTEBOOK_NAME, notebook.read_text(encoding="utf-8"))
    stale: list[str] = []
    check_notebook_outcome(run_dir, facts, stale)
    if stale:
        (run_dir / NOTEBOOK_NAME).unlink()
        return refuse(f"{notebook} does not show this run's outcome ({outcome_line(facts)!r}): save it (Ctrl-S) "
                      "after its last cells have run, then render again")
    render_html(run_dir / NOTEBOOK_NAME)
    write_manifest(run_dir, final=True)
    problems = verify(run_dir)
    for problem in problems:
        print(f"VERIFY FAILED: {problem}")
    print(f"Report: {run_dir / REPORT}")
    return 1 if problems else 0


def refuse(message: str) -> int:
    print(f"lib.lab: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, what in (("start", "prepare a scratch copy and open JupyterLab on it (make lab)"),
                       ("prepare", "prepare a scratch copy and its run folder, print where they are")):
        command = commands.add_parser(name, help=what)
        command.add_argument("--params", type=Path, default=DEFAULT_PROFILE,
                             help="a params/ YAML file (default: the embedded profile)")
        command.add_argument("-p", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                             help="set one parameter (repeatable), e.g. -p max_steps=50; validated like the others")
        command.add_argument("--run-dir", type=Path, help="a NEW run folder (default: submission_runs/interactive-"
                             "<profile>-<time>)")
    commands.add_parser("open", help="open JupyterLab on a scratch copy made earlier").add_argument(
        "notebook", type=Path)
    render_command = commands.add_parser("render", help="render the report of a finished interactive run")
    render_command.add_argument("notebook", type=Path, help="the saved scratch copy, build/lab/<name>.ipynb")
    render_command.add_argument("--run-dir", type=Path, help="its run folder (default: from the notebook's metadata)")
    args, jupyter_args = parser.parse_known_args(argv)  # the rest goes to JupyterLab: --port=8899, --no-browser
    utf8_output()
    if jupyter_args and args.command not in ("start", "open"):
        parser.error(f"unrecognized arguments: {' '.join(jupyter_args)}")

    if args.command == "render":
        return render(args.notebook.resolve(), args.run_dir and resolve_path(args.run_dir))
    if args.command == "open":
        notebook = args.notebook.resolve()
        if not notebook.is_file() or notebook.parent != LAB.resolve():
            return refuse(f"{args.notebook}: not a scratch copy in {LAB.relative_to(REPO_ROOT)}/ (make lab makes them; "
                          "JupyterLab serves that folder alone)")
        return serve(notebook, jupyter_args)
    try:
        overrides = dict(parse_override(text) for text in args.overrides)
        notebook, run_dir = prepare(args.params, overrides, args.run_dir)
    except (ValueError, OSError) as exc:  # FileExistsError included: a used folder or an existing copy
        return refuse(str(exc))
    print(f"Notebook: {notebook}")
    print(f"Run folder: {run_dir}", flush=True)
    return serve(notebook, jupyter_args) if args.command == "start" else 0


if __name__ == "__main__":
    sys.exit(main())
