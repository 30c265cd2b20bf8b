"""The main command: execute the notebook into a new run folder, then render its HTML report.

    python -m lib.execute --params params/embedded.yaml     # a new demo-<time> folder each run
    python -m lib.execute                                   # the official contract, submission_runs/m44_v1

It is papermill's and nbconvert's own Python APIs, chained so one command leaves the whole
evidence folder; the papermill CLI command in the README does the same in two steps.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import papermill
from nbconvert import HTMLExporter

from lib.config import REPO_ROOT, load_config, read_profile
from lib.evidence import write_manifest, write_text
from lib.run import refuse_used_folder
from lib.verify import verify

NOTEBOOK = REPO_ROOT / "notebooks" / "m44.ipynb"
RUNS = REPO_ROOT / "submission_runs"


def load_params(path: Path | None) -> dict:
    """A params/ YAML file as a dict; a missing, malformed or unknown-keyed file stops here, named."""
    if path is None:
        return {}
    try:
        return read_profile(path)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


def new_run_dir(profile: str) -> Path:
    """submission_runs/<profile>-<UTC time>, never an existing folder."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    candidate, n = RUNS / f"{profile}-{stamp}", 1
    while candidate.exists():
        n += 1
        candidate = RUNS / f"{profile}-{stamp}-{n}"
    return candidate


REPORT_TEMPLATE = Path(__file__).parent / "report_template"


def render_html(notebook: Path) -> Path:
    """The report: the executed notebook with its code hidden, in one file that opens offline."""
    exporter = HTMLExporter(
        extra_template_basedirs=[str(REPORT_TEMPLATE)], template_name="m44",
        exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True,
    )
    body, _ = exporter.from_filename(str(notebook))
    return write_text(notebook.with_suffix(".html"), body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, help="a params/ YAML file (default: the notebook's official defaults)")
    parser.add_argument("--run-dir", type=Path, help="the NEW run folder (default: from the params file, else "
                        "submission_runs/<params name>-<time>)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)

    params = load_params(args.params)
    run_dir = args.run_dir or (Path(params["run_dir"]) if "run_dir" in params else None)
    if run_dir is None:
        run_dir = new_run_dir(args.params.stem) if args.params else Path("submission_runs/m44_v1")
    run_dir = run_dir if run_dir.is_absolute() else REPO_ROOT / run_dir
    try:  # every parameter validated before anything is written: a typo never spends the folder
        load_config(args.params, {"run_dir": str(run_dir)})
    except ValueError as exc:
        raise SystemExit(f"parameters: {exc}") from None
    try:
        refuse_used_folder(run_dir)  # before papermill overwrites anything in it
    except FileExistsError as exc:
        raise SystemExit(str(exc)) from None
    run_dir.mkdir(parents=True, exist_ok=True)
    params["run_dir"] = str(run_dir)

    output = run_dir / "run.ipynb"
    failed = None
    try:
        papermill.execute_notebook(
            str(NOTEBOOK), str(output), parameters=params, cwd=str(REPO_ROOT),
            log_output=True, progress_bar=False,  # cell output streams to this terminal live
        )
    except papermill.PapermillExecutionError as exc:
        failed = exc  # the notebook has documented the failure; the report is still rendered
    report = render_html(output)
    write_manifest(run_dir)  # again, now that run.ipynb and run.html are final
    problems = verify(run_dir)  # the folder as it will be committed: every hash, file and number
    for problem in problems:
        print(f"VERIFY FAILED: {problem}")
    print(f"\nReport: {report}")
    if failed is not None:
        print(f"The run FAILED ({failed.ename}: {failed.evalue}); see {run_dir / 'failure_analysis.md'}")
        return 1
    if problems:
        print(f"The run folder does not verify ({len(problems)} problems); see above")
        return 1
    print(f"The run completed; summary: {run_dir / 'm44_summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
