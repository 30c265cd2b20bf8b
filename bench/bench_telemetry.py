"""The system metrics sampler's cost (lib/telemetry.py): as each run recorded it, and one sample measured here.

    python bench/bench_telemetry.py RUN_DIR [RUN_DIR ...]      # per phase of each run folder
    python bench/bench_telemetry.py --seconds 20               # one sample's cost on this machine

The sampler is a thread in the notebook's kernel: it takes nothing from the workers but CPU time, so its
thread's CPU time over a phase (`sampler_cpu_s` in the phase's stop record) is what sampling costs the run.
For each phase of a run folder the table gives its seconds, samples, that CPU time and its share of the phase;
the target is under 1% of training time.

--seconds samples back to back for that long (interval 1 ms) beside a child process that keeps a core busy,
as a worker would, and prints the CPU and wall time of one sample and what it costs at the default interval.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lib.config import RunConfig
from lib.contract import TELEMETRY
from lib.telemetry import SystemSampler
from lib.telemetry_summary import load_telemetry

TARGET = 0.01  # of a phase's time
BUSY_CHILD = "import time\nt = time.time()\nwhile time.time() - t < {seconds}: pass\n"


def from_runs(run_dirs: list[Path]) -> bool:
    """The table of the cost each run folder recorded; True when every training phase is under the target."""
    print("| run | phase | seconds | samples | interval | sampler CPU s | share of the phase |")
    print("|---|---|---|---|---|---|---|")
    within = True
    for run_dir in run_dirs:
        facts = load_telemetry(run_dir)
        if facts is None:
            print(f"| {run_dir.name} | (no {TELEMETRY}) | | | | | |")
            continue
        for phase in facts["phases"]:
            cpu, seconds = phase["sampler_cpu_s"], phase["duration_s"]
            share = cpu / seconds if cpu is not None and seconds else None
            if phase["phase"] == "training" and (share is None or share >= TARGET):
                within = False
            print(f"| {run_dir.name} | {phase['phase']} | {seconds:.1f} | {phase['samples']} | "
                  f"{phase['interval_s']:g} s | {'n/a' if cpu is None else f'{cpu:.3f}'} | "
                  f"{'n/a' if share is None else f'{share:.3%}'} |")
    print(f"\ntraining phases under {TARGET:.0%}: {'yes' if within else 'NO'}")
    return within


def one_sample(seconds: float) -> None:
    """Samples back to back beside a busy child process: the CPU and wall time of one."""
    default = RunConfig.__dataclass_fields__["telemetry_interval_s"].default
    with tempfile.TemporaryDirectory(prefix="bench-telemetry-") as tmp:
        path = Path(tmp) / TELEMETRY
        child = subprocess.Popen([sys.executable, "-c", BUSY_CHILD.format(seconds=seconds + 5)])
        try:
            with SystemSampler(path, "bench", interval_s=0.001):
                time.sleep(seconds)
        finally:
            child.kill()
        (phase,) = load_telemetry(Path(tmp))["phases"]
    cpu_ms = phase["sampler_cpu_s"] / phase["samples"] * 1000
    wall_ms = phase["duration_s"] / phase["samples"] * 1000
    print("| samples | seconds | CPU ms per sample | wall ms per sample | CPU share at the default "
          f"{default:g} s |\n|---|---|---|---|---|")
    print(f"| {phase['samples']} | {phase['duration_s']:.1f} | {cpu_ms:.2f} | {wall_ms:.2f} | "
          f"{cpu_ms / 1000 / default:.3%} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="*", type=Path, help="run folders holding system_metrics.jsonl")
    parser.add_argument("--seconds", type=float, default=0.0, help="measure one sample's cost for this long")
    args = parser.parse_args(argv)
    if not args.run_dirs and not args.seconds:
        parser.error("name run folders, or --seconds to measure a sample here")
    if args.seconds:
        one_sample(args.seconds)
    return 0 if not args.run_dirs or from_runs(args.run_dirs) else 1


if __name__ == "__main__":
    sys.exit(main())
