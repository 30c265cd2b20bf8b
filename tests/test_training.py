"""The fast training configuration changes no result, and every run records its throughput."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, DataCollatorWithFlattening, TrainerCallback

from lib.config import REPO_ROOT
from lib.contract import TRAINING_LOG, TRAINING_METRICS
from lib.data import load_traces
from lib.evidence import read_json
from lib.model_loading import load_tokenizer
from lib.prompt_format import IGNORE_INDEX, encode_traces
from lib.throughput import measure_peak_flops, model_flops_utilization, peak_memory
from lib.training_worker import build_trainer, label_positions_only, run_training
from tests.conftest import build_embedded

TRAIN_FILE = REPO_ROOT / "data" / "dev-reasoning-v2.jsonl"
HISTORY_KEYS = {"step", "loss", "epoch", "elapsed_s", "learning_rate", "grad_norm", "tokens_per_s",
                "samples_per_s", "step_time_s", "peak_memory_bytes", "memory_kind"}


@pytest.fixture(scope="module")
def embedded(tmp_path_factory) -> tuple[Path, list[dict]]:
    """The untrained embedded model (built from the training file) and 12 of its encoded records."""
    traces = load_traces(TRAIN_FILE)
    folder = build_embedded(traces, seed=0, out_dir=tmp_path_factory.mktemp("embedded"))
    tokenizer = load_tokenizer(str(folder))
    return folder, encode_traces(traces[:12], tokenizer, 768)


@pytest.fixture(scope="module")
def model(embedded):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(embedded[0], attn_implementation="eager").train()


@pytest.fixture(scope="module")
def tokenizer(embedded):
    tok = load_tokenizer(str(embedded[0]))
    tok.padding_side = "right"
    return tok


def padded(tokenizer, records):
    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)(records)


def test_label_position_loss_equals_the_models_own_loss(model, tokenizer, embedded):
    batch = padded(tokenizer, embedded[1][:6])
    with torch.no_grad():
        full = model(**batch, use_cache=False).loss
        ours = model(**label_positions_only(batch)).loss
        # As in training: summed and divided by the label count of the whole accumulated batch.
        n = torch.tensor(batch["labels"][:, 1:].ne(IGNORE_INDEX).sum().item() * 2)
        full_sum = model(**batch, use_cache=False, num_items_in_batch=n).loss
        ours_sum = model(**label_positions_only(batch), num_items_in_batch=n).loss
    assert ours.item() == pytest.approx(full.item(), abs=1e-5)
    assert ours_sum.item() == pytest.approx(full_sum.item(), abs=1e-5)


def test_only_label_positions_get_logits(model, tokenizer, embedded):
    batch = padded(tokenizer, embedded[1][:3])
    with torch.no_grad():
        logits = model(**label_positions_only(batch)).logits
    assert logits.shape == (batch["labels"][:, 1:].ne(IGNORE_INDEX).sum().item(), model.config.vocab_size)


def test_packed_sequences_stay_apart(model, embedded):
    """Concatenated records with restarting position ids give each record's own logits."""
    records = embedded[1][:4]
    batch = DataCollatorWithFlattening(separator_id=IGNORE_INDEX)(records)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        alone = torch.cat([model(input_ids=torch.tensor([r["input_ids"]]), use_cache=False).logits[0] for r in records])
        # With the config's default KV cache, transformers' masking does not detect the packing:
        # the reason label_positions_only turns the cache off.
        leaked = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=True).logits[0]
    assert torch.allclose(packed, alone, atol=1e-5)
    assert not torch.allclose(leaked, alone, atol=1e-3)


def test_packed_and_padded_batches_give_the_same_loss(model, tokenizer, embedded):
    records = embedded[1][:5]
    flat = DataCollatorWithFlattening(separator_id=IGNORE_INDEX)(records)
    with torch.no_grad():
        packed = model(**label_positions_only(flat)).loss
        pad = model(**label_positions_only(padded(tokenizer, records))).loss
    assert packed.item() == pytest.approx(pad.item(), abs=1e-5)


class Tokens(TrainerCallback):
    def on_train_end(self, args, state, control, **kwargs):
        self.seen = state.num_input_tokens_seen


def test_the_trainer_counts_non_padding_tokens(embedded_cfg, tokenizer, embedded, tmp_path):
    records = embedded[1][:8]  # two batches of four: one pass over every record
    cfg = dataclasses.replace(embedded_cfg, batch_size=4, gradient_accumulation_steps=1, max_steps=2)
    counter = Tokens()
    model = AutoModelForCausalLM.from_pretrained(embedded[0], attn_implementation="eager")  # trained here: a copy
    build_trainer(cfg, model, tokenizer, Dataset.from_list(records), tmp_path / "out", [counter]).train()
    assert counter.seen == sum(len(r["input_ids"]) for r in records)


def test_metrics_record_throughput(embedded_cfg, embedded, tmp_path):
    cfg = dataclasses.replace(embedded_cfg, train_file=str(TRAIN_FILE), max_steps=4, logging_steps=2, batch_size=2)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run_training(cfg, run_dir, str(embedded[0]))
    metrics = read_json(run_dir / TRAINING_METRICS)
    assert metrics["status"] == "completed" and metrics["steps_completed"] == 4
    assert [h["step"] for h in metrics["history"]] == [1, 2, 4]
    for record in metrics["history"]:
        assert HISTORY_KEYS <= set(record)
        assert record["tokens_per_s"] > 0 and record["samples_per_s"] > 0 and record["step_time_s"] > 0
        assert record["memory_kind"] == "cpu_rss" and record["peak_memory_bytes"] > 0
    assert metrics["total_tokens"] == metrics["history"][-1]["num_input_tokens_seen"] > 0
    assert metrics["tokens_per_s"] > 0 and 0 < metrics["mfu"] < 1
    assert metrics["device_peak_flops"] > 0 and metrics["device_peak_flops_source"].startswith("measured")
    assert "tok/s" in (run_dir / TRAINING_LOG).read_text(encoding="utf-8")


def test_peak_memory_and_utilisation():
    size, kind = peak_memory("cpu")
    assert kind == "cpu_rss" and size > 0
    peak = measure_peak_flops("cpu", torch.float32, budget_s=0.05)
    assert peak.flops > 0 and "1024x1024 float32" in peak.source
    assert model_flops_utilization(1_000, 500, 2.0, 3e6) == pytest.approx(0.5)
