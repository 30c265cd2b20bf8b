"""The same run on several processes through torchrun: one evidence set, the same numbers, failures named by rank.

On this CPU machine 2 processes train over gloo, through the real notebook, and are compared with one
process doing the same global batch; a rank is killed and the group is sent SIGTERM, each through the
notebook, and must end documented. FSDP is tested at the level a CPU allows (tests/fsdp_ranks.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest
import torch
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure
from transformers import TrainingArguments

from lib.config import REPO_ROOT, RunConfig, load_config
from lib.contract import (
    BASE_MODEL,
    ENV_SNAPSHOT,
    EVAL_RESULTS,
    FINAL_MODEL,
    GPU_SNAPSHOT,
    TRAINING_LOG,
    TRAINING_METRICS,
)
from lib.data import CheckResult, load_traces
from lib.evaluation import evaluate
from lib.evidence import read_json
from lib.generation import shard_batches
from lib.launcher import INTERRUPTED_EXIT, read_failures, run_worker
from lib.model_source import ModelSource
from lib.preflight import Prepared, check_cuda_arch, check_device, check_memory, per_device
from lib.resources import estimate_training_memory
from lib.training import Trained
from lib.training_worker import run_training, sharding_arguments
from lib.verify import verify
from tests.conftest import build_embedded, papermill_command, with_fault
from tests.test_failures import embedded, no_hub_credentials

PROFILE = REPO_ROOT / "params" / "embedded.yaml"
# Two processes of micro-batch 4 against one process accumulating two micro-batches of 4: the same
# global batch of 8 records a step. Evaluation in 4 batches of 32 (the last one of 4 items), so each
# rank takes two batches and one of them is the short last one.
TWO = {"num_processes": 2, "batch_size": 4, "gradient_accumulation_steps": 1, "max_steps": 8, "logging_steps": 1,
       "max_new_tokens": 8, "eval_batch_size": 32, "eval_limit": 0}  # every item, not SHORT_RUN's first 10
ONE = {**TWO, "num_processes": 1, "gradient_accumulation_steps": 2}
# Both runs add the same per-record gradients, in another order (DDP's all-reduce of two half sums
# against accumulation in place) and, here, on another number of threads: float32 rounding, 1e-7
# relative as measured over these 8 steps, which the optimizer then carries on. A real difference
# (another data partition, a loss scaled by the process count, gradients not synchronised) moves the
# loss by 1e-2 or more from step 2 on.
LOSS_RTOL = 1e-4
ENDS_WITHIN_S = 60  # from the fault to the notebook's end: no rank waits on a collective for its peer
ROOT_CAUSE = "Root Cause"


def two_process_run(tmp_path: Path, monkeypatch, fault: str | None = None, rank: int | None = None) -> Path:
    """The notebook on 2 processes; with a fault, it must end failed in training, and soon after the fault."""
    run_dir = tmp_path / "two"
    if fault is None:
        done = papermill_command(run_dir, embedded(**TWO))
        assert done.returncode == 0, done.stderr[-3000:]
        return run_dir
    no_hub_credentials(monkeypatch, tmp_path)
    env = with_fault(fault, {**os.environ, "M44_FAULT_MARK": str(tmp_path / "fault_time"),
                             **({"M44_FAULT_RANK": str(rank)} if rank is not None else {})})
    done = papermill_command(run_dir, embedded(**TWO), env=env)
    assert done.returncode != 0 and "FAILED in phase training" in done.stderr, done.stderr[-3000:]
    ended_after = time.time() - float((tmp_path / "fault_time").read_text(encoding="utf-8"))
    assert ended_after < ENDS_WITHIN_S, f"the run ended {ended_after:.0f} s after the fault"
    return run_dir


def without_timing(results: dict) -> dict:
    """evaluation_results.json without the seconds each item took, the one field two runs never share."""
    for item in results["items"]:
        for label in results["models"]:
            item[label].pop("seconds")
    return results


@pytest.mark.notebook
def test_two_processes_train_and_evaluate_as_one_process_does(tmp_path):
    run_dir = two_process_run(tmp_path, None)
    assert verify(run_dir) == []  # the whole evidence contract, as for one process
    metrics = read_json(run_dir / TRAINING_METRICS)
    processes = metrics["processes"]
    assert (processes["world_size"], processes["backend"]) == (2, "gloo")
    assert [(r["rank"], r["device"]) for r in processes["ranks"]] == [(0, "cpu"), (1, "cpu")]
    line = "processes: 2 (torchrun), backend gloo, sharding none; rank 0 on cpu, rank 1 on cpu"
    for snapshot in (ENV_SNAPSHOT, GPU_SNAPSHOT):
        assert line in (run_dir / snapshot).read_text(encoding="utf-8").splitlines(), snapshot
    # Rank 0 alone writes the log; every rank's output reaches the notebook, prefixed with its rank.
    assert len((run_dir / TRAINING_LOG).read_text(encoding="utf-8").splitlines()) == TWO["max_steps"]
    notebook = (run_dir / "run.ipynb").read_text(encoding="utf-8")
    assert "[rank0]: step     8/8" in notebook and "[rank1]: training " in notebook
    # MFU divides by the peak of every rank's device: the sum.
    peak = processes["peak_flops_all_ranks"]
    assert peak == pytest.approx(sum(r["device_peak_flops"] for r in processes["ranks"]))
    assert metrics["mfu"] == pytest.approx(6 * metrics["num_parameters"] * metrics["tokens_per_s"] / peak, rel=1e-3)

    # One process, the same global batch, from the same untrained model: the worker's own training code.
    one_dir = tmp_path / "one"
    one_dir.mkdir()
    cfg = load_config(PROFILE, {**ONE, "max_new_tokens": TWO["max_new_tokens"], "run_dir": str(one_dir)})
    run_training(cfg, one_dir, str(run_dir / BASE_MODEL))
    one, two = (read_json(d / TRAINING_METRICS)["history"] for d in (one_dir, run_dir))
    assert [h["step"] for h in one] == [h["step"] for h in two] == list(range(1, TWO["max_steps"] + 1))
    # The same records in every step: the token counts (summed over the ranks) agree exactly.
    assert [h["num_input_tokens_seen"] for h in one] == [h["num_input_tokens_seen"] for h in two]
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=LOSS_RTOL), a["step"]
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=LOSS_RTOL), a["step"]

    # Evaluation of the 2-process checkpoint by one process, as the phase runs it: the same file.
    cfg.save(one_dir)  # the evaluation worker reads the parameters from the folder
    prepared = Prepared(model_source=str(run_dir / BASE_MODEL))
    evaluate(cfg, one_dir, prepared, Trained(run_dir / FINAL_MODEL))
    assert without_timing(read_json(one_dir / EVAL_RESULTS)) == without_timing(read_json(run_dir / EVAL_RESULTS))


def documented_training_failure(run_dir: Path) -> tuple[str, dict]:
    """The failure analysis and the metrics of a run that failed in training, its evidence complete."""
    assert verify(run_dir) == []
    analysis = (run_dir / "failure_analysis.md").read_text(encoding="utf-8")
    assert "- **phase**: training\n" in analysis
    metrics = read_json(run_dir / TRAINING_METRICS)
    assert metrics["status"] == "failed" and metrics["steps_completed"] >= 2 and metrics["history"]
    assert "last training step reached**: none" not in analysis
    return analysis, metrics


@pytest.mark.notebook
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_killed_rank_stops_the_group_and_is_named(tmp_path, monkeypatch):
    run_dir = two_process_run(tmp_path, monkeypatch, "sigkill", rank=1)
    analysis, metrics = documented_training_failure(run_dir)
    cause = "rank 1 of 2: training process killed by SIGKILL"
    assert f"- **cause**: {cause}" in analysis
    assert metrics["error"].startswith(cause) and metrics["failed_rank"] == 1
    assert metrics["failures"][0]["rank"] == 1 and metrics["failures"][0]["exitcode"] == -9


@pytest.mark.notebook
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_to_torchrun_stops_every_rank_and_keeps_the_metrics(tmp_path, monkeypatch):
    run_dir = two_process_run(tmp_path, monkeypatch, "sigterm_torchrun", rank=1)
    analysis, metrics = documented_training_failure(run_dir)
    cause = "interrupted by signal SIGTERM (all 2 processes stopped)"
    assert f"- **cause**: {cause}" in analysis
    assert metrics["error"] == cause and "failures" not in metrics  # no rank failed on its own


def processes_running(marker: str) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]


@pytest.mark.skipif(sys.platform == "win32", reason="Ctrl-C delivered as a POSIX signal")
def test_ctrl_c_in_the_kernel_stops_torchrun_and_every_rank():
    """The notebook interrupted while several processes run: none of them may outlive it."""
    marker = uuid.uuid4().hex
    ranks_up = threading.Event()

    def interrupt_when_both_ranks_run():
        while len(processes_running(marker)) < 3:  # torchrun and its 2 ranks
            time.sleep(0.2)
        ranks_up.set()
        os.kill(os.getpid(), signal.SIGINT)  # what "interrupt kernel" does to the kernel

    threading.Thread(target=interrupt_when_both_ranks_run, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):  # each rank sleeps for 10 minutes, unless stopped
        run_worker("timeit", ["-s", "import time", f"time.sleep(600)  # {marker}"], 2, "test process")
    assert ranks_up.is_set()
    assert processes_running(marker) == []


def test_fsdp2_shards_the_model_as_the_trainer_would_on_two_gloo_processes(tmp_path):
    model_dir = build_embedded(load_traces(REPO_ROOT / "data" / "dev-reasoning-v2.jsonl"), 0, tmp_path / "model")
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         str(REPO_ROOT / "tests" / "fsdp_ranks.py"), str(model_dir)],
        cwd=REPO_ROOT, capture_output=True, text=True, encoding="utf-8",
        env={**os.environ, "USE_LIBUV": "0"} if sys.platform == "win32" else None,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for rank in (0, 1):
        assert f"rank {rank}: FSDP2 over 2 processes" in done.stdout and "tied embedding kept" in done.stdout


def test_the_trainer_gets_fsdp2_full_shard_for_sharding_fsdp():
    cfg = load_config(None, {"num_processes": 2, "sharding": "fsdp", "optimizer": "adamw_torch"})
    # The Trainer turns `fsdp`/`fsdp_config` into Accelerate's plugin arguments; use_cpu only because
    # this machine has no GPU (the official run's bf16 on CUDA cannot be constructed here).
    plugin = TrainingArguments(output_dir="unused", use_cpu=True, **sharding_arguments(cfg)).fsdp_plugin_args
    assert plugin == {
        "fsdp_version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "reshard_after_forward": True,
        "state_dict_type": "FULL_STATE_DICT", "cpu_ram_efficient_loading": False, "activation_checkpointing": False,
    }
    assert sharding_arguments(load_config(None, {"num_processes": 2})) == {}


@pytest.mark.parametrize("overrides, message", [
    ({"num_processes": 0}, "'num_processes' must be >= 1"),
    ({"num_processes": 65}, "'num_processes' must be <= 64"),
    ({"sharding": "zero3"}, "'sharding' must be one of none, fsdp"),
    ({"sharding": "fsdp"}, "needs device: cuda and num_processes >= 2"),
    ({"sharding": "fsdp", "num_processes": 2, "device": "cpu", "dtype": "float32"}, "got device: cpu"),
    ({"sharding": "fsdp", "num_processes": 2}, "adafactor does not work on FSDP2's sharded parameters"),
])
def test_sharding_needs_several_gpus_and_adamw(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, overrides)


@pytest.mark.parametrize("num_items, batch_size, world_size", [(100, 32, 2), (100, 16, 3), (5, 8, 4), (64, 16, 2)])
def test_each_rank_takes_whole_batches_of_the_one_process_partition(num_items, batch_size, world_size):
    shares = [shard_batches(num_items, batch_size, rank, world_size) for rank in range(world_size)]
    assert sorted(i for share in shares for i in share) == list(range(num_items))
    one_process = [list(range(k, min(k + batch_size, num_items))) for k in range(0, num_items, batch_size)]
    for rank, share in enumerate(shares):
        # Split as generate_greedy splits it, the share is batches rank, rank + N, ... of one process.
        assert [share[i:i + batch_size] for i in range(0, len(share), batch_size)] == one_process[rank::world_size]


def child_failure(tmp_path: Path, rank: int, exitcode: int, message: str | None = None, timestamp: int = 0):
    """A failed rank as torchrun's agent records it; with a message, as torch's `record` wrote it."""
    error_file = "<N/A>"
    if message is not None:
        error_file = str(tmp_path / f"error_{rank}.json")
        Path(error_file).write_text(json.dumps({"message": {"message": message, "extraInfo": {
            "py_callstack": f"Traceback (most recent call last):\n{message}\n", "timestamp": str(timestamp)}}}),
            encoding="utf-8")
    return ProcessFailure(local_rank=rank, pid=1000 + rank, exitcode=exitcode, error_file=error_file)


def test_a_rank_that_lost_its_peer_is_not_the_cause_even_when_torchrun_says_so(tmp_path):
    """Rank 1 was killed; rank 0's collective failed the same second and its error file is stamped
    earlier than torchrun noticed the kill, so torchrun's summary names rank 0 as the root cause."""
    failures = {
        1: child_failure(tmp_path, 1, -9),
        0: child_failure(tmp_path, 0, 1, "RuntimeError: [gloo/transport/tcp/pair.cc:553] Connection closed by peer"),
    }
    summary = str(ChildFailedError("lib.training_worker", failures))  # torch's own text, as torchrun prints it
    assert "rank      : 0 (local_rank: 0)" in summary.split(ROOT_CAUSE)[1]
    found = read_failures(summary, "training process")
    assert [(f.rank, f.exitcode) for f in found] == [(1, -9), (0, 1)]
    assert found[0].cause == "training process killed by SIGKILL (out-of-memory killer, segfault or kill)"
    assert found[1].consequence and not found[0].consequence


def test_a_rank_that_raised_is_the_cause_with_its_traceback(tmp_path):
    failures = {
        0: child_failure(tmp_path, 0, INTERRUPTED_EXIT),  # stopped by torchrun after rank 1 failed
        1: child_failure(tmp_path, 1, 1, "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
                         timestamp=int(time.time()) + 5),
    }
    found = read_failures(str(ChildFailedError("lib.training_worker", failures)), "training process")
    assert [f.rank for f in found] == [1, 0]
    assert found[0].cause == "CUDA out of memory. Tried to allocate 2.00 GiB"  # the message, not the class
    assert "Traceback (most recent call last)" in found[0].traceback
    assert read_failures("an ordinary end, no summary", "training process") == ()


# --- pre-flight on several devices (a simulated machine: this one has no GPU) -------------------------


@pytest.fixture
def gpus(monkeypatch):
    """CUDA devices as torch reports them, set per test: a list of (name, capability, free GiB)."""
    devices: list[tuple[str, tuple[int, int], float]] = []
    cuda = torch.cuda
    monkeypatch.setattr(cuda, "is_available", lambda: bool(devices))
    monkeypatch.setattr(cuda, "device_count", lambda: len(devices))
    monkeypatch.setattr(cuda, "get_device_name", lambda i=0: devices[i][0])
    monkeypatch.setattr(cuda, "get_device_capability", lambda i=0: devices[i][1])
    monkeypatch.setattr(cuda, "get_arch_list", lambda: ["sm_80", "sm_90"])
    monkeypatch.setattr(cuda, "mem_get_info", lambda i=0: (int(devices[i][2] * 2**30), 80 * 2**30))
    return devices


@pytest.fixture(scope="module")
def embedded_model(tmp_path_factory) -> ModelSource:
    folder = build_embedded(load_traces(REPO_ROOT / "data" / "dev-reasoning-v2.jsonl"), 0,
                                  tmp_path_factory.mktemp("model"))
    return ModelSource(str(folder), "embedded")


def cuda_config(**overrides) -> RunConfig:
    return load_config(None, {"num_processes": 2, "optimizer": "adamw_torch", **overrides})


def test_preflight_needs_a_gpu_per_process(gpus):
    gpus += [("H100", (9, 0), 70.0)] * 2
    with pytest.raises(RuntimeError, match=r"num_processes is 4, one per GPU, but 2 CUDA device\(s\) are visible"):
        check_device(cuda_config(num_processes=4))
    detail = check_device(cuda_config())[1]
    assert detail.startswith("2 processes (nccl, torch ") and "), one per device: rank 0 cuda:0 H100, rank 1 cuda:1 H100" in detail


def test_preflight_refuses_mixed_architectures(gpus):
    gpus += [("H100", (9, 0), 70.0), ("A100", (8, 0), 70.0)]
    with pytest.raises(RuntimeError, match="different architectures \\(cuda:0 sm_90, cuda:1 sm_80\\)"):
        check_cuda_arch(cuda_config(), "H100")
    gpus[1] = ("H100", (9, 0), 70.0)
    assert check_cuda_arch(cuda_config(), "H100") == "sm_90 is in the torch build's list (sm_80 sm_90)"


LENGTHS = CheckResult("record lengths", "pass", "", {"longest_response_tokens": 100, "longest_tokens": 200})


def test_preflight_checks_every_device_against_the_estimate_per_device(gpus, embedded_model):
    gpus += [("H100", (9, 0), 70.0), ("H100", (9, 0), 0.5)]  # cuda:1 is nearly full
    with pytest.raises(RuntimeError, match=r"short: cuda:1\)"):
        check_memory(cuda_config(), "H100", embedded_model, LENGTHS)
    gpus[1] = ("H100", (9, 0), 70.0)
    ddp = check_memory(cuda_config(), "H100", embedded_model, LENGTHS)[1]
    fsdp = check_memory(cuda_config(sharding="fsdp"), "H100", embedded_model, LENGTHS)[1]
    assert "per process fits the free GPU memory cuda:0 70.0 of 80.0 GiB, cuda:1 70.0 of 80.0 GiB" in ddp
    assert "per process (FSDP: weights, gradients and optimizer state sharded 2 ways)" in fsdp


def test_under_fsdp_a_device_holds_its_shard_and_the_gathered_embedding(embedded_model):
    cfg = cuda_config(sharding="fsdp")
    whole = estimate_training_memory(embedded_model.source, cfg, 100)
    each = per_device(whole, cfg, embedded_model.source)
    config = json.loads((Path(embedded_model.source) / "config.json").read_text(encoding="utf-8"))
    embedding = config["vocab_size"] * config["hidden_size"] * 2  # bfloat16
    assert each.weights == whole.weights // 2 + embedding and each.gradients == whole.gradients // 2 + embedding
    assert each.optimizer == whole.optimizer // 2 and each.activations == whole.activations
    assert per_device(whole, cuda_config(), embedded_model.source) == whole  # DDP: a full copy each


def test_preflight_on_the_cpu_states_processes_and_cores():
    cfg = load_config(PROFILE, {"num_processes": 4})
    assert check_device(cfg) == ("cpu", f"CPU run (device: cpu): 4 processes (gloo) on {os.cpu_count()} logical "
                                        "cores (torchrun gives each one thread unless OMP_NUM_THREADS is set)")
