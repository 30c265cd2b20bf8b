"""The training memory estimate (lib/resources.py): its arithmetic, and that it never undercounts a measured peak."""

from __future__ import annotations

import json

import pytest
import torch
from datasets import Dataset

from bench.profiles import run_config
from lib.config import REPO_ROOT
from lib.data import load_traces
from lib.model_builder import build_tokenizer, init_model, model_config_path, read_config
from lib.prompt_format import encode_traces
from lib.resources import (
    CPU_PROCESS_BYTES,
    CUDA_ALLOCATOR_FACTOR,
    CUDA_CONTEXT_BYTES,
    count_parameters,
    estimate_training_memory,
    optimizer_state_bytes,
)
from lib.training_worker import build_trainer
from lib.units import GIB
from tests.conftest import replace

GEMMA_2B = str(REPO_ROOT / "models" / "gemma-2b")
EMBEDDED = str(REPO_ROOT / "models" / "embedded")
# google/gemma-3-270m's architecture (the config of the `make gemma` model), for the measured table.
GEMMA_3_270M = dict(
    model_type="gemma3_text", hidden_size=640, intermediate_size=2048, num_hidden_layers=18, num_attention_heads=4,
    num_key_value_heads=1, head_dim=256, vocab_size=262144, max_position_embeddings=32768, sliding_window=512,
    query_pre_attn_scalar=256, tie_word_embeddings=True,
)
# Peak resident memory of training measured by bench/bench_memory.py on this project's 2-core machine
# (3 steps with the size's profile; the longest record and response in that model's tokens), see
# docs/BENCHMARKS.md "Training memory": (profile, model, longest record, longest response, peak RSS bytes).
MEASURED = [
    ("embedded", "embedded", 591, 121, 934_608_896),
    ("gemma3-270m", "gemma-3-270m", 353, 121, 8_809_095_168),
    ("gemma-2b-shape", "gemma-2b", 349, 121, 19_939_692_544),
]
OVERCOUNT_LIMIT_AT_FULL_SIZE = 0.20
# The same with finetune: lora and TRL's lora_* defaults (bench/bench_memory.py --finetune lora, docs/BENCHMARKS.md
# "LoRA"): (profile, model, longest record, longest response, rows added for the tags, peak RSS bytes).
MEASURED_LORA = [
    ("embedded", "embedded", 591, 121, 0, 978_690_048),
    ("gemma3-270m", "gemma-3-270m", 353, 121, 4, 8_275_861_504),
    ("gemma-2b-shape", "gemma-2b", 349, 121, 0, 8_582_750_208),
]
LORA_RATIO_AT_REAL_SIZE = (1.0, 1.3)  # estimate / measured peak, the bound for Gemma 3 270M and Gemma 2B


@pytest.fixture
def official(embedded_cfg):
    """The official configuration (params/m44.yaml) as far as memory goes."""
    return replace(embedded_cfg, device="cuda", dtype="bfloat16", optimizer="adafactor", batch_size=1,
                   gradient_accumulation_steps=4, max_seq_length=512)


@pytest.fixture(scope="module")
def gemma_3_270m(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("gemma-3-270m")
    (folder / "config.json").write_text(json.dumps(GEMMA_3_270M), encoding="utf-8")
    return str(folder)


def test_the_committed_gemma_2b_config_is_the_published_architecture():
    n, config = count_parameters(GEMMA_2B)
    assert n == 2_506_172_416  # Gemma 2B's published parameter count, the embedding counted once (tied)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads,
            config.head_dim, config.intermediate_size, config.vocab_size) == (2048, 18, 8, 1, 256, 16384, 256000)
    assert config.tie_word_embeddings and config.model_type == "gemma"


def test_components_of_the_official_run(official):
    f = estimate_training_memory(GEMMA_2B, official)
    assert f.weights == f.gradients == 2 * f.parameters  # bfloat16
    assert f.optimizer < f.weights / 50  # Adafactor's factored state is small
    # Adafactor upcasts the largest parameter (the 256,000 x 2,048 embedding) and makes 2 more
    # float32 tensors of its size: 4 x 4 bytes per element.
    assert f.optimizer_step == 16 * 256_000 * 2048
    assert f.tokens == 512 and f.process == 0
    # The optimizer step, not the backward, is the official run's peak.
    assert f.tensors == f.optimizer_phase == f.weights + f.gradients + f.optimizer + f.optimizer_step
    assert f.optimizer_phase > f.forward_backward
    assert f.total == f.tensors + int(f.tensors * (CUDA_ALLOCATOR_FACTOR - 1)) + CUDA_CONTEXT_BYTES
    assert 10 * GIB < f.total < 30 * GIB  # fits the RTX 5090's 32 GB, as the original run did
    adamw = estimate_training_memory(GEMMA_2B, replace(official, optimizer="adamw_torch"))
    assert adamw.optimizer == 2 * f.weights
    assert adamw.optimizer_step == f.weights  # on a GPU, torch's multi-tensor AdamW: one sqrt of every moment


def test_activations_are_counted_at_the_longest_record(official):
    f = estimate_training_memory(GEMMA_2B, official, loss_tokens=120, longest_tokens=350)
    assert f.tokens == 350
    unknown = estimate_training_memory(GEMMA_2B, official, loss_tokens=120)
    assert unknown.tokens == 512 and unknown.activations > f.activations  # max_seq_length when not known
    batch_4 = estimate_training_memory(GEMMA_2B, replace(official, batch_size=4), loss_tokens=120, longest_tokens=350)
    assert batch_4.activations == 4 * f.activations and batch_4.logits == 4 * f.logits
    # Logits only where the loss reads them: a 30-token response needs a quarter of 120 positions.
    shorter = estimate_training_memory(GEMMA_2B, official, loss_tokens=30, longest_tokens=350)
    assert shorter.logits * 4 == f.logits and shorter.forward_backward < f.forward_backward


def test_cpu_counts_the_process_and_the_phases_together(official):
    official = replace(official, dtype="float32")  # lib/config.py refuses bfloat16 on the CPU
    cpu = estimate_training_memory(GEMMA_2B, replace(official, device="cpu"), loss_tokens=120, longest_tokens=350)
    assert cpu.cuda_overhead == 0 and cpu.process == CPU_PROCESS_BYTES
    # Freed activations stay resident on a CPU: the optimizer step's temporaries come on top.
    assert cpu.total == (cpu.process + cpu.weights + cpu.gradients + cpu.optimizer + cpu.optimizer_step
                         + cpu.activations + cpu.logits)
    gpu = estimate_training_memory(GEMMA_2B, official, loss_tokens=120, longest_tokens=350)
    assert gpu.tensors == cpu.tensors  # the same tensors; only what comes on top differs


def test_the_estimate_is_json_ready(official):
    f = estimate_training_memory(GEMMA_2B, official, loss_tokens=120, longest_tokens=350)
    record = json.loads(json.dumps(f.to_dict()))
    assert record["total"] == f.total and record["device"] == "cuda"
    for key in ("parameters", "weights", "gradients", "optimizer", "optimizer_step", "activations", "logits",
                "process", "forward_backward", "optimizer_phase", "tensors", "cuda_overhead"):
        assert isinstance(record[key], int), key
    assert "optimizer step" in f.describe() and f.describe().endswith("GiB")


@pytest.mark.parametrize("optimizer", ["adafactor", "adamw_torch"])
def test_optimizer_state_is_what_the_trainers_optimizer_keeps(optimizer, embedded_cfg, tmp_path):
    traces = load_traces(REPO_ROOT / "data" / "dev-reasoning-v2.jsonl")[:8]
    tokenizer = build_tokenizer(traces, read_config(model_config_path("embedded")).vocab_size)
    model = init_model(read_config(model_config_path("embedded"), tokenizer), seed=0, dtype=torch.float32)
    cfg = replace(embedded_cfg, optimizer=optimizer, max_steps=1, batch_size=2)
    dataset = Dataset.from_list(encode_traces(traces, tokenizer, cfg.max_seq_length))
    trainer = build_trainer(cfg, model, tokenizer, dataset, tmp_path / "out")
    trainer.train()
    kept = sum(t.numel() * t.element_size() for s in trainer.optimizer.state.values() for t in s.values()
               if isinstance(t, torch.Tensor) and t.dim() > 0)  # scalars (step counts, RMS) aside
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert optimizer_state_bytes(optimizer, shapes, 4) == kept


@pytest.mark.parametrize(("profile", "model", "longest", "loss_tokens", "measured"), MEASURED)
def test_the_estimate_never_undercounts_a_measured_peak(profile, model, longest, loss_tokens, measured, gemma_3_270m):
    source = {"embedded": EMBEDDED, "gemma-3-270m": gemma_3_270m, "gemma-2b": GEMMA_2B}[model]
    footprint = estimate_training_memory(source, run_config(profile), loss_tokens=loss_tokens, longest_tokens=longest)
    assert footprint.total >= measured, f"{profile}: estimate {footprint.describe()} under the measured {measured / GIB:.2f} GiB"
    if model == "gemma-2b":
        assert footprint.total <= (1 + OVERCOUNT_LIMIT_AT_FULL_SIZE) * measured, footprint.describe()


@pytest.mark.parametrize(("profile", "model", "longest", "loss_tokens", "added", "measured"), MEASURED_LORA)
def test_the_lora_estimate_is_within_its_bound_of_a_measured_peak(profile, model, longest, loss_tokens, added,
                                                                  measured, gemma_3_270m):
    source = {"embedded": EMBEDDED, "gemma-3-270m": gemma_3_270m, "gemma-2b": GEMMA_2B}[model]
    cfg = run_config(profile, finetune="lora")
    footprint = estimate_training_memory(source, cfg, loss_tokens=loss_tokens, longest_tokens=longest, added_rows=added)
    low, high = LORA_RATIO_AT_REAL_SIZE if model != "embedded" else (1.0, None)  # the 1 GiB process term dominates 0.6M
    assert footprint.total >= low * measured, footprint.describe()
    if high is not None:
        assert footprint.total <= high * measured, footprint.describe()
