"""The evaluation worker: `python -m lib.evaluation_worker RUN_DIR TRAINED [--baseline BASELINE]`.

lib.evaluation starts it for every evaluation, as lib.training starts the training worker: one process, or one per
device through torchrun when `num_processes` > 1. Each rank generates for its share of the eval items, first with
the baseline model (when there is one) and then with the trained one: whole batches of the one-process partition
(lib.generation.shard_batches), so every output is the one a single process would produce. Rank 0 gathers the
shares, puts them back in item order, scores and writes evaluation_results.json, evaluation_summary.md and the
comparison chart (lib.evaluation.write_evaluation) into RUN_DIR, whose config.json holds the parameters. Exit
codes as lib.training_worker's (lib/launcher.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lib.config import RunConfig
from lib.console import utf8_output
from lib.contract import CONFIG
from lib.data import load_eval
from lib.evaluation import generate_for, scored_items, write_evaluation
from lib.generation import shard_batches
from lib.launcher import join_processes, leave_process_group, worker_main
from lib.results import MODELS


def run_evaluation(cfg: RunConfig, run_dir: Path, sources: dict[str, str]) -> None:
    """Generate this rank's share for every model in `sources` (label -> model); rank 0 gathers, scores and writes."""
    processes = join_processes(cfg.device, cfg.num_processes)  # first: it selects this rank's GPU
    in_file = load_eval(cfg.path("eval_file"))  # the file pre-flight checked
    items = scored_items(cfg, in_file)
    mine = shard_batches(len(items), cfg.eval_batch_size, processes.process_index, processes.num_processes)
    where = f" (rank {processes.process_index} of {processes.num_processes})" if processes.num_processes > 1 else ""
    print(f"evaluating {len(mine)} of {len(items)} items{where} on {processes.device.type}", flush=True)
    generations = {}
    for label in (label for label in MODELS if label in sources):
        records = generate_for(sources[label], cfg, [items[i] for i in mine], label)
        shares = gather(list(zip(mine, records)), processes.num_processes)  # every rank's (index, record) pairs
        generations[label] = [record for _, record in sorted(shares, key=lambda pair: pair[0])]
    if processes.is_main_process:
        write_evaluation(run_dir, cfg, items, generations, len(in_file))
    if processes.num_processes > 1:
        leave_process_group(processes)


def gather(share: list, num_processes: int) -> list:
    """Every rank's share, on every rank; one process has them all (and skips importing Accelerate's collectives)."""
    if num_processes == 1:
        return share
    from accelerate.utils import gather_object

    return gather_object(share)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help=f"the run folder; its {CONFIG} holds the parameters")
    parser.add_argument("trained", help="the trained model's folder")
    parser.add_argument("--baseline", help="the model before training: hub id or local folder, as pre-flight "
                        "resolved it (none: the trained model alone)")
    args = parser.parse_args(argv)
    utf8_output()
    sources = {"trained": args.trained, **({"baseline": args.baseline} if args.baseline else {})}
    return worker_main(lambda: run_evaluation(RunConfig.load(args.run_dir), args.run_dir, sources))


if __name__ == "__main__":
    sys.exit(main())
