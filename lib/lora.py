"""LoRA and QLoRA through peft: the run's adapter and 4-bit settings, wrapping a model, loading an adapter folder.

peft does the work (get_peft_model, PeftModel.save_pretrained / from_pretrained, merge_and_unload) and
bitsandbytes quantizes QLoRA's base to 4-bit NF4; this module only turns the run's parameters into
their configurations and says what an adapter trains. The response tags the run adds to the
tokenizer (lib/model_loading.py) are rows the base model lacks: peft's `trainable_token_indices`
trains those rows and saves them in the adapter, so base + adapter is the whole trained model.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import AutoConfig, BitsAndBytesConfig, PreTrainedModel, PreTrainedTokenizerBase

from lib.config import LORA_ALL_LINEAR, RunConfig
from lib.contract import ADAPTER_CONFIG, ADAPTER_WEIGHTS

# peft is imported where an adapter is made or loaded, not here: every process of the run imports this module
# (through lib.model_loading), and importing peft costs each one about 1.5 s that a full fine-tune never uses
# (docs/BENCHMARKS.md, "Starting a run's processes"). tests/test_architecture.py keeps it so.
if TYPE_CHECKING:
    from peft import LoraConfig, PeftModel

# QLoRA's quantization: NF4 (the QLoRA paper's, Dettmers et al. 2023; TRL's ModelConfig default too) with the
# paper's double quantization (the constants quantized as well: ~0.4 bit a parameter less; TRL leaves it off).
QUANT_TYPE = "nf4"
DOUBLE_QUANT = True


def is_adapter(folder: str | Path) -> bool:
    """Whether `folder` is a peft adapter folder (adapter_config.json) rather than whole weights."""
    return (Path(folder) / ADAPTER_CONFIG).is_file()


def quantization_config(cfg: RunConfig) -> BitsAndBytesConfig | None:
    """The 4-bit NF4 load of QLoRA's base (computing in the run's dtype); None for full and lora."""
    if cfg.finetune != "qlora":
        return None
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=QUANT_TYPE,
                              bnb_4bit_use_double_quant=DOUBLE_QUANT,
                              bnb_4bit_compute_dtype=getattr(torch, cfg.dtype))


def adapter_config(cfg: RunConfig, added_rows: list[int]) -> LoraConfig:
    """peft's LoraConfig from the run's lora_* parameters; `added_rows` are trained and saved as tokens."""
    from peft import LoraConfig

    targets = cfg.lora_target_modules
    return LoraConfig(
        task_type="CAUSAL_LM",
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets if targets == LORA_ALL_LINEAR else [name.strip() for name in targets.split(",")],
        trainable_token_indices=added_rows or None,
    )


def added_rows(model_source: str, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The embedding rows lib.model_loading.load_model adds for tokens the base's vocabulary lacks."""
    config = AutoConfig.from_pretrained(model_source)
    known = getattr(config, "text_config", config).vocab_size
    return list(range(known, len(tokenizer)))


def add_adapter(model: PreTrainedModel, cfg: RunConfig, rows: list[int]) -> PeftModel:
    """The model with trainable LoRA adapters on its frozen base (peft's get_peft_model).

    QLoRA's 4-bit base first goes through peft's prepare_model_for_kbit_training, as TRL does (norms
    and embeddings in float32 for stable training), without gradient checkpointing: no mode of the run
    recomputes activations, and the memory estimate (lib/resources.py) counts them kept.
    """
    from peft import get_peft_model, prepare_model_for_kbit_training

    if cfg.finetune == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return get_peft_model(model, adapter_config(cfg, rows))


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, all) parameters, each tensor once; peft counts a 4-bit tensor as the parameters it packs."""
    peft = sys.modules.get("peft")  # a PeftModel exists only once peft is imported
    if peft is not None and isinstance(model, peft.PeftModel):
        return model.get_nb_trainable_parameters()
    return sum(p.numel() for p in model.parameters() if p.requires_grad), sum(p.numel() for p in model.parameters())


def save_base_reference(model: PeftModel, base: str, adapter_dir: Path) -> None:
    """Record where the base model is before saving: relative to the adapter folder when the base is in the run
    folder (the embedded model's base_model/), so that the pair moves together; else the source as given."""
    base_path, run_dir = Path(base).resolve(), adapter_dir.resolve().parents[1]
    if Path(base).is_dir() and run_dir in base_path.parents:
        base = Path(os.path.relpath(base_path, adapter_dir.resolve())).as_posix()
    for config in model.peft_config.values():
        config.base_model_name_or_path = base


def base_of(adapter_dir: str | Path) -> str:
    """The base model an adapter folder was trained on: a folder (relative ones resolved against the adapter's)
    or a hub id."""
    adapter_dir = Path(adapter_dir)
    base = json.loads((adapter_dir / ADAPTER_CONFIG).read_text(encoding="utf-8"))["base_model_name_or_path"]
    relative = adapter_dir / base
    return str(relative.resolve()) if not Path(base).is_absolute() and relative.is_dir() else base


def apply_adapter(model: PreTrainedModel, adapter_dir: str | Path, cfg: RunConfig) -> PreTrainedModel:
    """The base with the saved adapter applied, for generation: merged into the weights (exact up to rounding, and
    no adapter arithmetic per token), except on QLoRA's 4-bit base, where merging would quantize the update away."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(model, str(adapter_dir))
    return model if cfg.finetune == "qlora" else model.merge_and_unload()


def adapter_bytes(adapter_dir: Path) -> int:
    """The adapter's size on disk: its weights and its configuration."""
    return sum((adapter_dir / name).stat().st_size for name in (ADAPTER_WEIGHTS, ADAPTER_CONFIG))
