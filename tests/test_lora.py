"""LoRA and QLoRA (finetune: lora | qlora): the parameters, what peft trains and pre-flight estimates, QLoRA's
refusal without a CUDA GPU, and the model card of a final checkpoint."""

from __future__ import annotations

import ast
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import peft
import pytest
import torch
import yaml

from lib import gguf_model, lora
from lib.config import REPO_ROOT, load_config
from lib.contract import (
    ADAPTER_CONFIG, ADAPTER_WEIGHTS, CONFIG, EVAL_RESULTS, FINAL_MODEL, MANIFEST, MERGED_MODEL, MODEL_CARD, REPORT,
    SUMMARY, SUMMARY_FACTS,
)
from lib.model_card import license_of, render_model_card
from lib.model_loading import load_model, load_tokenizer
from lib.preflight import BITSANDBYTES_SM120, bitsandbytes_problem, check_quantization
from lib.prompt_format import RESPONSE_TAGS
from lib.reevaluate import REEVALUATION, main as reevaluate
from lib.resources import ADAPTER_BYTES, estimate_training_memory
from lib.summary import finetune_facts, finetune_text, render_summary
from lib.verify import verify
from tests.conftest import EMBEDDED, build_embedded, copy_run, launch
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
    with pytest.raises(RuntimeError, match="qlora needs a CUDA GPU.*use finetune: lora on this machine"):
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


# --- LoRA through the real notebook ---------------------------------------------------------------------------------

# The embedded profile as LoRA, short: a few steps and 8 eval items (LoRA on a 0.6M model is plumbing, not quality).
SHORT_LORA = {"finetune": "lora", "merge_adapter": True, "max_steps": 12, "logging_steps": 4, "eval_limit": 8,
              "eval_batch_size": 8, "max_new_tokens": 24}


def short_params(folder: Path, base: str, **changes) -> Path:
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump({**yaml.safe_load((REPO_ROOT / "params" / f"{base}.yaml").read_text(
        encoding="utf-8")), **changes}), encoding="utf-8")
    return path


def _build_lora_run(folder: Path) -> None:
    params = short_params(folder, "embedded", **SHORT_LORA)
    done = launch("--params", str(params), "--run-dir", str(folder / "run"))
    (folder / "stdout.txt").write_text(done.stdout + done.stderr, encoding="utf-8")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def lora_run(shared_run) -> Path:
    return shared_run("lora-embedded", _build_lora_run)


@pytest.mark.notebook
def test_a_lora_run_saves_the_adapter_and_states_what_it_trained(lora_run):
    run = lora_run / "run"
    final = run / FINAL_MODEL
    assert verify(run) == []
    assert {ADAPTER_WEIGHTS, ADAPTER_CONFIG, "tokenizer.json"} <= {p.name for p in final.iterdir()}
    assert not (final / "model.safetensors").exists()  # an adapter, not whole weights
    assert (run / MERGED_MODEL / "model.safetensors").is_file()  # merge_adapter: true
    facts = json.loads((run / SUMMARY_FACTS).read_text(encoding="utf-8"))
    finetune = facts["finetune"]
    assert finetune["mode"] == "lora" and finetune["settings"]["r"] == 16
    assert 0 < finetune["trainable_parameters"] < finetune["all_parameters"]
    assert finetune["adapter_bytes"] == lora.adapter_bytes(final)
    assert f"- **fine-tuning**: {finetune_text(finetune)}" in (run / SUMMARY).read_text(encoding="utf-8")
    assert "<dt>fine-tuning</dt>" in (run / REPORT).read_text(encoding="utf-8")  # the report's first screen
    listed = {e["path"] for e in json.loads((run / MANIFEST).read_text(encoding="utf-8"))["files"]}
    assert {MODEL_CARD, f"{FINAL_MODEL}/{ADAPTER_WEIGHTS}"} <= listed
    params = json.loads((run / CONFIG).read_text(encoding="utf-8"))["parameters"]
    assert (run / MODEL_CARD).read_text(encoding="utf-8") == render_model_card(facts, params)


@pytest.mark.notebook
def test_an_edited_model_card_is_named_by_the_verifier(lora_run, tmp_path):
    run = copy_run(lora_run / "run", tmp_path / "run")
    card = run / MODEL_CARD
    card.write_text(card.read_text(encoding="utf-8").replace("license: other", "license: mit"), encoding="utf-8")
    problems = verify(run)
    assert any(p.startswith(f"{MODEL_CARD}: differs from what {SUMMARY_FACTS} renders") for p in problems), problems
    card.unlink()
    assert any(p.startswith(f"{MODEL_CARD}: missing, but {SUMMARY_FACTS} says") for p in verify(run))


@pytest.mark.notebook
def test_reevaluating_the_adapter_gives_the_runs_evaluation_item_by_item(lora_run, tmp_path):
    run = lora_run / "run"
    out = tmp_path / "again"
    assert reevaluate(["--model", str(run / FINAL_MODEL), "--eval-file", str(REPO_ROOT / "data" / "eval_v2.jsonl"),
                       "--out", str(out), "--params", str(lora_run / "params.yaml")]) == 0
    again = json.loads((out / EVAL_RESULTS).read_text(encoding="utf-8"))
    first = json.loads((run / EVAL_RESULTS).read_text(encoding="utf-8"))
    provenance = json.loads((out / REEVALUATION).read_text(encoding="utf-8"))
    assert provenance["baseline"]["how"] == "the run folder's base_model/"
    assert len(again["items"]) == len(first["items"]) == SHORT_LORA["eval_limit"]
    for before, after in zip(first["items"], again["items"]):
        for label in ("baseline", "trained"):
            assert {k: v for k, v in after[label].items() if k != "seconds"} == {
                k: v for k, v in before[label].items() if k != "seconds"}, (before["id"], label)
    assert again["metrics"] == first["metrics"]


@pytest.mark.notebook
def test_the_model_cards_snippet_loads_the_adapter_offline(lora_run, tmp_path):
    run = lora_run / "run"
    card = (run / MODEL_CARD).read_text(encoding="utf-8")
    snippet = card.split("```python\n")[1].split("```")[0]
    (tmp_path / "submission_runs").mkdir()
    (tmp_path / "submission_runs" / run.name).symlink_to(run, target_is_directory=True)  # where the card says it is
    done = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True,
                          encoding="utf-8", timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip()  # the untrained-ish model's answer, whatever it is


@pytest.mark.notebook
def test_qlora_is_refused_cleanly_on_a_cpu_machine(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    run = tmp_path / "run"
    done = launch("--params", "params/gemma-2b-qlora.yaml", "--run-dir", str(run))
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert verify(run) == []
    checks = {c["name"]: c for c in json.loads((run / "preflight.json").read_text(encoding="utf-8"))["checks"]}
    assert checks["4-bit quantization"]["status"] == "fail"
    assert "qlora needs a CUDA GPU" in checks["4-bit quantization"]["detail"]
    analysis = (run / "failure_analysis.md").read_text(encoding="utf-8")
    assert "4-bit quantization: finetune: qlora needs a CUDA GPU" in analysis
    assert not (run / "checkpoints").exists()


@pytest.mark.notebook
def test_lora_on_gemma_3_270m_trains_the_tag_rows_into_a_small_adapter(tmp_path):
    pytest.importorskip(gguf_model.MODULE, reason="the Gemma 3 270M package is not installed (make gemma)")
    # One record a step: every record holds the response tags; a batch of 4 trained 38 s here against 20 s.
    params = short_params(tmp_path, "gemma3-270m-lora", max_steps=2, batch_size=1, logging_steps=1, eval_limit=2,
                          eval_batch_size=2, max_new_tokens=8)
    run = tmp_path / "run"
    done = launch("--params", str(params), "--run-dir", str(run), timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert verify(run) == []
    final = run / FINAL_MODEL
    from safetensors import safe_open

    with safe_open(str(final / ADAPTER_WEIGHTS), "pt") as f:
        tag_rows = [f.get_tensor(k).shape for k in f.keys() if "trainable_tokens_delta" in k]
    assert tag_rows and tag_rows[0][0] == len(RESPONSE_TAGS)  # the 4 response tags Gemma's vocabulary lacks
    facts = json.loads((run / SUMMARY_FACTS).read_text(encoding="utf-8"))
    assert facts["finetune"]["adapter_bytes"] < 64 * 2**20  # whole weights are ~1 GiB in float32
    assert facts["finetune"]["trainable_parameters"] < facts["finetune"]["all_parameters"] / 20
    meta = card_metadata((run / MODEL_CARD).read_text(encoding="utf-8"))
    assert (meta["base_model"], meta["license"], meta["library_name"]) == ("google/gemma-3-270m", "gemma", "peft")


def test_the_reports_first_screen_states_the_mode():
    from lib.report import facts_html

    assert ("<dt>fine-tuning</dt><dd>lora (r 16, alpha 32, dropout 0.05, all-linear): 88,064 of 695,552 parameters "
            "trained (12.66%); adapter 349 KiB on disk</dd>") in facts_html(lora_facts())
