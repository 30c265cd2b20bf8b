"""The README's picture of lib.compare: the first screen of a comparison page, 1400 px wide, into docs/compare.png.

    python -m tools.compare_screenshot                      # two embedded runs made here first
    python -m tools.compare_screenshot RUN_A RUN_B          # two run folders you have

Without run folders it makes two with the main command, into submission_runs/compare-screenshot-<time>-A and -B
(scratch, ignored by git): the embedded demo cut to 200 steps (run A) and to 800 (run B), so that the runs
differ in one parameter and the paired test has a difference to judge. The page goes to
build/compare-screenshot/<time>/. Needs Debian's chromium and chromium-driver (tools/browser.py).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from lib.compare import HTML_NAME
from lib.config import REPO_ROOT
from lib.run_folder import RUNS
from tools.browser import CHROMEDRIVER, CHROMIUM, start_browser

SCRATCH = REPO_ROOT / "build" / "compare-screenshot"
PICTURE = REPO_ROOT / "docs" / "compare.png"
WIDTH, HEIGHT = 1400, 1000  # the first screen, as the report's tests and tools/readme_figures.py take it
OVERRIDES = {"A": ["-p", "max_steps=200"], "B": ["-p", "max_steps=800"]}  # on the embedded profile (params/embedded.yaml)


def make_runs(stamp: str) -> list[Path]:
    runs = []
    for label, overrides in OVERRIDES.items():
        run_dir = RUNS / f"compare-screenshot-{stamp}-{label}"
        print(f"run {label}: python -m lib.execute --params params/embedded.yaml {' '.join(overrides)}", flush=True)
        done = subprocess.run([sys.executable, "-m", "lib.execute", "--params", "params/embedded.yaml", *overrides,
                               "--run-dir", str(run_dir)], cwd=REPO_ROOT)
        if done.returncode != 0:
            raise SystemExit(f"run {label} did not complete (exit {done.returncode}); see {run_dir}")
        runs.append(run_dir)
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="RUN_A RUN_B (default: two embedded runs made here)")
    args = parser.parse_args(argv)
    if len(args.runs) not in (0, 2):
        parser.error("name two run folders, or none")
    if not (CHROMIUM and CHROMEDRIVER):
        raise SystemExit("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    runs = args.runs or make_runs(stamp)
    out = SCRATCH / stamp
    done = subprocess.run([sys.executable, "-m", "lib.compare", *map(str, runs), "--out", str(out)], cwd=REPO_ROOT)
    if done.returncode == 2:
        raise SystemExit("lib.compare compared nothing (its message is above)")
    driver = start_browser()
    try:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False})
        driver.get((out / HTML_NAME).as_uri())
        PICTURE.write_bytes(driver.get_screenshot_as_png())
    finally:
        driver.quit()
    print(f"{PICTURE.relative_to(REPO_ROOT)}: the first screen of {out / HTML_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
