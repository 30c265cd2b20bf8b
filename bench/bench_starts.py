"""What starting each of a run's processes costs before it does any work: its imports.

    python bench/bench_starts.py [--repeat 5]

A run starts a Jupyter kernel (the notebook's imports), a training worker and an evaluation worker (more with
`num_processes` > 1, and once more for each re-run in a debugging session); the test suite starts them for every
notebook run it makes. For each, the script times a fresh `python -c "<its imports>"` (the best of --repeat, so
that the machine's noise adds the least) and names the large packages it loads. Last line: the three starts'
sum, the fixed cost of one run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STARTS = {
    "kernel (the notebook's imports)": "from lib import report, evaluation, preflight, training; import lib.run",
    "training worker": "import lib.training_worker",
    "evaluation worker": "import lib.evaluation_worker",
    "verifier (python -m lib.verify)": "import lib.verify",
}
LARGE = ("torch", "transformers", "peft", "datasets", "accelerate", "pandas", "matplotlib")


def start(code: str) -> tuple[float, list[str]]:
    """Wall seconds of a new interpreter running `code`, and the large packages it imported."""
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {LARGE!r} if m in sys.modules))"
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, encoding="utf-8",
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}, check=True)
    return time.perf_counter() - t0, done.stdout.split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="starts per process; the best is shown")
    args = parser.parse_args()
    load = f", load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""  # POSIX only
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs{load}")
    print("| process | start, best of %d (s) | large packages imported |" % args.repeat)
    print("|---|---|---|")
    run = 0.0
    for name, code in STARTS.items():
        times, packages = zip(*(start(code) for _ in range(args.repeat)))
        best = min(times)
        run += best if "verifier" not in name else 0.0
        print(f"| {name} | {best:.2f} | {', '.join(packages[0]) or 'none'} |")
    print(f"one run's three starts: {run:.2f} s")


if __name__ == "__main__":
    main()
