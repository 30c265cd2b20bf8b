"""The evaluation worker for several processes: `python -m lib.evaluation_worker RUN_DIR BASELINE TRAINED`.

lib.evaluation.evaluate starts it through torchrun when `num_processes` > 1 (one process evaluates in
the kernel). Each rank generates for its share of the eval items, first with the baseline model and
then with the trained one: whole batches of the one-process partition (lib.generation.shard_batches),
so every output is the one a single process would produce. Rank 0 gathers the shares, puts them back
in item order, and scores and writes evaluation_results.json and evaluation_summary.md exactly as one
process does (lib.evaluation.write_evaluation). Exit codes as lib.training_worker's (lib/launcher.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from accelerate.utils import gather_object

from lib.config import RunConfig
from lib.contract import CONFIG
from lib.data import load_eval
from lib.evaluation import generate_for, scored_items, write_evaluation
from lib.generation import shard_batches
from lib.launcher import join_processes, leave_process_group, worker_main
from lib.results import MODELS


def run_evaluation(cfg: RunConfig, run_dir: Path, sources: dict[str, str]) -> None:
    """Generate this rank's share for every model; rank 0 gathers, scores and writes."""
    processes = join_processes(cfg.device, cfg.num_processes)  # first: it selects this rank's GPU
    in_file = load_eval(cfg.path("eval_file"))  # the file pre-flight checked
    items = scored_items(cfg, in_file)
    mine = shard_batches(len(items), cfg.eval_batch_size, processes.process_index, processes.num_processes)
    print(f"evaluating {len(mine)} of {len(items)} items (rank {processes.process_index} of "
          f"{processes.num_processes} on {processes.device.type})", flush=True)
    generations = {}
    for label in MODELS:
        records = generate_for(sources[label], cfg, [items[i] for i in mine], label)
        shares = gather_object(list(zip(mine, records)))  # every rank's (index, record) pairs
        generations[label] = [record for _, record in sorted(shares, key=lambda pair: pair[0])]
    if processes.is_main_process:
        write_evaluation(run_dir, cfg, items, generations, len(in_file))
    leave_process_group(processes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help=f"the run folder; its {CONFIG} holds the parameters")
    parser.add_argument("baseline", help="the model before training: hub id or local folder, as pre-flight resolved it")
    parser.add_argument("trained", help="the trained model's folder")
    args = parser.parse_args(argv)
    return worker_main(lambda: run_evaluation(
        RunConfig.load(args.run_dir), args.run_dir,
        dict(zip(MODELS, (args.baseline, args.trained)))))


if __name__ == "__main__":
    sys.exit(main())
