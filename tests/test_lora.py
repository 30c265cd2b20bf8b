"""LoRA and QLoRA (finetune: lora | qlora): the parameters, what peft trains and pre-flight estimates, QLoRA's
refusal without a CUDA GPU, and the model card of a final checkpoint."""

from __future__ import annotations

import ast
import copy

import peft
import pytest
import torch
import yaml

from lib import lora
from lib.config import REPO_ROOT, load_config
from lib.contract import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from lib.model_card import license_of, render_model_card
from lib.model_loading import load_model, load_tokenizer
from lib.preflight import BITSANDBYTES_SM120, bitsandbytes_problem, check_quantization
from lib.resources import ADAPTER_BYTES, estimate_training_memory
from lib.summary import finetune_facts, finetune_text, render_summary
from tests.conftest import EMBEDDED, build_embedded
from tests.test_summary import completed_facts

GEMMA_2B = str(REPO_ROOT / "models" / "gemma-2b")


def lora_cfg(tmp_path, **changes):
    return load_config(EMBEDDED, {"run_dir": str(tmp_path / "run"), "finetune": "lora", **changes})


# --- the parameters ----------------------------------------------------------------------------------------------


def test_the_defaults_train_every_weight_and_follow_trl_for_the_adapters(official_params):
    cfg = load_config(None, {})
    assert (cfg.finetune, cfg.trains_adapter, cfg.merge_adapter) == ("full", False, False)
    trl = pytest.importorskip("trl", reason="TRL is a benchmark package (requirements-bench.txt)")
    defaults = trl.ModelConfig()
    assert (cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout) == (defaults.lora_r, defaults.lora_alpha, defaults.lora_dropout)


@pytest.mark.parametrize("changes, message", [
    ({"finetune": "qlora", "device": "cpu"}, "'finetune': qlora .* needs device: cuda .*use finetune: lora"),
    ({"merge_adapter": True}, "'merge_adapter': there is no adapter to merge with finetune: full"),
    ({"finetune": "lora", "device": "cuda", "num_processes": 2, "sharding": "fsdp", "optimizer": "adamw_torch"},
     "'finetune': lora is not supported with sharding: fsdp"),
    ({"finetune": "qlora", "device": "cuda", "num_processes": 2}, "'finetune': qlora trains on one GPU"),
    ({"lora_target_modules": "q_proj,"}, "'lora_target_modules' must be all-linear or module names"),
    ({"lora_target_modules": "q_proj; rm -rf"}, "'lora_target_modules' must be"),
    ({"lora_r": 0}, "'lora_r' must be >= 1"),
    ({"lora_dropout": 1.0}, "'lora_dropout' must be <= 0.9"),
    ({"finetune": "dora"}, "'finetune' must be one of full, lora, qlora"),
])
def test_inconsistent_settings_are_refused_naming_the_fields(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        load_config(EMBEDDED, {"run_dir": str(tmp_path), **changes})


def test_module_names_may_be_listed_with_spaces(tmp_path):
    cfg = lora_cfg(tmp_path, lora_target_modules="q_proj, v_proj")
    assert lora.adapter_config(cfg, []).target_modules == {"q_proj", "v_proj"}


def test_the_checkpoint_names_are_pefts():
    assert (ADAPTER_CONFIG, ADAPTER_WEIGHTS) == (peft.utils.CONFIG_NAME, peft.utils.SAFETENSORS_WEIGHTS_NAME)


# --- what peft trains, and what pre-flight estimates ---------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded_dir(tmp_path_factory):
    from lib.data import load_traces

    traces = load_traces(REPO_ROOT / "data" / "dev-reasoning-v2.jsonl")
    return str(build_embedded(traces, 42, tmp_path_factory.mktemp("embedded") / "base_model"))


def test_the_estimate_counts_exactly_what_peft_trains(embedded_dir, tmp_path):
    cfg = lora_cfg(tmp_path)
    tokenizer = load_tokenizer(embedded_dir)
    model = lora.add_adapter(load_model(embedded_dir, cfg, tokenizer), cfg, [])
    trainable, total = lora.count_parameters(model)
    footprint = estimate_training_memory(embedded_dir, cfg)
    full = estimate_training_memory(embedded_dir, load_config(EMBEDDED, {"run_dir": str(tmp_path)}))
    assert footprint.trainable == trainable < total == footprint.parameters == full.parameters + trainable
    assert footprint.gradients == trainable * ADAPTER_BYTES  # the adapters' gradients alone, in float32
    assert footprint.optimizer == 2 * trainable * ADAPTER_BYTES  # AdamW's two moments of the adapters
    assert footprint.weights == full.weights + trainable * ADAPTER_BYTES  # the frozen base and the adapters
    assert footprint.saved < full.saved / 5  # the checkpoint is the adapter
    assert [p for p in model.parameters() if p.requires_grad and p.dtype != torch.float32] == []


def test_dropout_adds_the_adapters_kept_inputs(tmp_path):
    with_dropout = estimate_training_memory(GEMMA_2B, lora_cfg(tmp_path, lora_dropout=0.1), 100, 300)
    without = estimate_training_memory(GEMMA_2B, lora_cfg(tmp_path, lora_dropout=0.0), 100, 300)
    assert with_dropout.activations > without.activations
    assert with_dropout.weights == without.weights


def test_qlora_holds_the_base_in_four_bits(tmp_path):
    cuda = {"device": "cuda", "dtype": "bfloat16", "batch_size": 1, "max_seq_length": 512}
    lora_fp = estimate_training_memory(GEMMA_2B, lora_cfg(tmp_path, **cuda), 121, 349)
    qlora = estimate_training_memory(GEMMA_2B, lora_cfg(tmp_path, finetune="qlora", **cuda), 121, 349)
    full = estimate_training_memory(GEMMA_2B, load_config(None, {"run_dir": str(tmp_path)}), 121, 349)
    assert qlora.trainable == lora_fp.trainable
    assert qlora.weights < 0.7 * lora_fp.weights  # linear layers at ~4.1 bits; the embedding in float32
    assert qlora.total < lora_fp.total < 0.6 * full.total


def test_added_token_rows_are_trained_and_travel_with_the_adapter(embedded_dir, tmp_path):
    """The response tags a real Gemma tokenizer lacks: rows the base does not have are saved in the adapter."""
    cfg = lora_cfg(tmp_path)
    tokenizer = load_tokenizer(embedded_dir)
    tokenizer.add_tokens(["<extra_tag>"])  # a token the embedded vocabulary lacks, as Gemma's lacks the tags
    rows = lora.added_rows(embedded_dir, tokenizer)
    assert rows == [len(tokenizer) - 1]
    model = lora.add_adapter(load_model(embedded_dir, cfg, tokenizer), cfg, rows)
    out = tmp_path / "run" / "checkpoints" / "final"
    lora.save_base_reference(model, embedded_dir, out)
    model.save_pretrained(str(out), save_embedding_layers=False)  # as lib/training_worker.py saves it
    from safetensors import safe_open

    with safe_open(str(out / ADAPTER_WEIGHTS), "pt") as f:
        keys = list(f.keys())
    assert [key for key in keys if "trainable_tokens" in key]  # the added row's trained values
    assert not [key for key in keys if key.endswith("embed_tokens.weight")]  # not the whole grown embedding
    assert lora.adapter_bytes(out) == sum((out / n).stat().st_size for n in (ADAPTER_WEIGHTS, ADAPTER_CONFIG))
    assert estimate_training_memory(embedded_dir, cfg, added_rows=1).trainable == lora.count_parameters(model)[0]


def test_a_missing_target_module_fails_in_the_estimate(tmp_path):
    with pytest.raises(ValueError, match="not found in the base model"):
        estimate_training_memory(GEMMA_2B, lora_cfg(tmp_path, lora_target_modules="no_such_proj"), 100, 300)


# --- QLoRA needs a CUDA GPU and a bitsandbytes with its kernels --------------------------------------------------------


@pytest.mark.parametrize("version, capability, expected", [
    ("0.50.2", None, "needs a CUDA GPU"),
    ("0.45.2", (12, 0), f"{BITSANDBYTES_SM120} is the first release"),
    ("0.50.2", (12, 0), None),
    ("0.43.0", (8, 9), None),  # an older release is fine on an older GPU
])
def test_bitsandbytes_must_support_the_gpu(version, capability, expected):
    problem = bitsandbytes_problem(version, capability)
    assert (problem is None) if expected is None else (expected in problem)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_qlora_is_refused_without_cuda_naming_why(tmp_path):
    cfg = load_config(REPO_ROOT / "params" / "gemma-2b-qlora.yaml", {"run_dir": str(tmp_path)})
    with pytest.raises(RuntimeError, match="qlora needs (a CUDA GPU|bitsandbytes)"):
        check_quantization(cfg)
    assert check_quantization(lora_cfg(tmp_path)) == "not needed (finetune: lora)"


# --- the facts and the model card -------------------------------------------------------------------------------


def lora_facts() -> dict:
    facts = completed_facts()
    params = lora_params()
    facts["finetune"] = finetune_facts(params, {"trainable_parameters": 88_064, "all_parameters": 695_552,
                                                "adapter_bytes": 357_441})
    return facts


def lora_params() -> dict:
    return load_config(EMBEDDED, {"run_dir": "submission_runs/embedded-1", "finetune": "lora"}).to_dict()


def test_the_summary_states_mode_trained_share_and_adapter_size():
    assert ("- **fine-tuning**: lora (r 16, alpha 32, dropout 0.05, all-linear): 88,064 of 695,552 parameters "
            "trained (12.66%); adapter 349 KiB on disk") in render_summary(lora_facts()).splitlines()
    full = finetune_text(completed_facts()["finetune"])
    assert full == "full: 695,552 of 695,552 parameters trained (100.00%)"


def card_metadata(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_the_card_is_hugging_faces_format_with_this_runs_numbers():
    facts, params = lora_facts(), lora_params()
    card = render_model_card(facts, params)
    meta = card_metadata(card)
    assert meta["library_name"] == "peft" and meta["license"] == "other" and "base_model" not in meta
    assert meta["datasets"] == ["dev-reasoning-v2.jsonl", "eval_v2.jsonl"]
    assert f"sha256 {facts['data']['files']['train']['sha256']}" in card  # beside the name, as a YAML comment
    results = meta["model-index"][0]["results"][0]
    assert results["dataset"]["revision"] == facts["data"]["files"]["eval"]["sha256"]
    metrics = {m["name"]: m for m in results["metrics"]}
    trained = metrics["strict accuracy, this model"]
    assert trained["value"] == round(facts["evaluation"]["trained"]["accuracy"], 4)
    assert trained["args"]["ci95_low"] <= trained["value"] <= trained["args"]["ci95_high"]
    difference = metrics["strict accuracy, trained minus base model"]
    assert difference["args"]["ci95_low"] == round(facts["evaluation"]["comparison"]["strict"]["ci_low"], 4)
    assert "88,064 of 695,552 parameters trained" in card and "## Limitations" in card


def test_the_loading_snippet_is_python_for_each_mode():
    for mode in ("full", "lora", "qlora"):
        facts, params = lora_facts(), {**lora_params(), "finetune": mode}
        facts["finetune"] = finetune_facts(params, None)
        snippet = render_model_card(facts, params).split("```python\n")[1].split("```")[0]
        ast.parse(snippet)
        assert ("PeftModel.from_pretrained" in snippet) == (mode != "full")
        assert ("load_in_4bit=True" in snippet) == (mode == "qlora")
        assert 'HF_HUB_OFFLINE"] = "1"' in snippet


@pytest.mark.parametrize("model, license_id, base", [
    ("google/gemma-2b", "gemma", "google/gemma-2b"),
    ("gemma-3-270m-gguf", "gemma", "google/gemma-3-270m"),
    ("embedded", "other", None),
    ("gemma-2b-shape", "other", None),
    ("C:\\models\\mine", "unknown", None),
])
def test_the_license_is_the_base_models(model, license_id, base):
    facts = lora_facts()
    facts["model"] = model
    meta = card_metadata(render_model_card(facts, lora_params()))
    assert (meta["license"], meta.get("base_model")) == (license_id, base)
    assert license_of(model)[0] == license_id


def test_a_card_without_evaluation_says_so():
    facts = copy.deepcopy(lora_facts())
    facts["evaluation"] = None
    card = render_model_card(facts, lora_params())
    assert "model-index" not in card_metadata(card) and "Not evaluated" in card
