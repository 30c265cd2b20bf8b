"""The training worker: `python -m lib.train_worker RUN_DIR MODEL_SOURCE`, started by lib.training.train.

A module of its own so that `-m` does not run lib/training.py a second time as __main__.
Exit codes: 0 trained and saved; 1 an exception (traceback printed); 130 interrupted.
"""

from __future__ import annotations

import argparse
import signal
import sys
import traceback
from pathlib import Path

from lib.config import RunConfig
from lib.evidence import read_json
from lib.training import INTERRUPTED_EXIT, run_training


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="the run folder; its config.json holds the parameters")
    parser.add_argument("model_source", help="hub id or local folder, as resolved by pre-flight")
    args = parser.parse_args(argv)
    # A polite stop (the notebook interrupted, `kill`) gets the same clean ending as Ctrl-C.
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    cfg = RunConfig.from_parameters(read_json(args.run_dir / "config.json")["parameters"])
    try:
        run_training(cfg, args.run_dir, args.model_source)
    except KeyboardInterrupt:
        return INTERRUPTED_EXIT
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
