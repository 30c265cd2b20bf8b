"""Loading a causal LM and its tokenizer: one path for hub ids and local folders alike."""

from __future__ import annotations

import gc

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as transformers_logging

from lib import lora
from lib.config import RunConfig
from lib.prompt_format import RESPONSE_TAGS

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
# Loading and saving bars would fill the notebook and the HTML report with carriage returns.
transformers_logging.disable_progress_bar()


def load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    """The tokenizer, with the response tags registered as ordinary tokens."""
    tokenizer = AutoTokenizer.from_pretrained(source)
    # Non-special, so decoding with skip_special_tokens keeps the tags in the output.
    tokenizer.add_tokens(list(RESPONSE_TAGS), special_tokens=False)
    return tokenizer


def load_model(source: str, cfg: RunConfig, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """The model on the configured device and dtype; embeddings grown if tags were added.

    `source` is whole weights, or a peft adapter folder (a lora/qlora run's checkpoint): then its base model
    is loaded the same way and the adapter applied (lib/lora.py). With finetune: qlora the base is 4-bit NF4.
    """
    if lora.is_adapter(source):
        return lora.apply_adapter(load_model(lora.base_of(source), cfg, tokenizer), source, cfg)
    quantization = lora.quantization_config(cfg)
    model = AutoModelForCausalLM.from_pretrained(
        source,
        dtype=DTYPES[cfg.dtype],
        # Gemma 2 needs eager attention for its logit soft-capping; a parameter for the rest.
        attn_implementation=cfg.attn_implementation,
        # bitsandbytes quantizes while loading onto the GPU; a 4-bit model cannot be moved afterwards.
        **({"quantization_config": quantization, "device_map": {"": torch.cuda.current_device()}}
           if quantization else {}),
    )
    known = model.get_input_embeddings().num_embeddings
    if known < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        init_added_tokens(model, tokenizer, range(known, len(tokenizer)))
    return model if quantization else model.to(cfg.device)


@torch.no_grad()
def init_added_tokens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, token_ids: range) -> None:
    """Start each added token (the response tags) at the mean of the pieces the model knows it as.

    transformers' mean_resizing starts every new row near the mean of ALL embeddings: the four
    tags then look alike, and a short fine-tune cannot tell them apart (gemma-3-270m, 60 steps:
    format rate 0%, every answer opened with <answer>). "<reasoning>" split by the tokenizer's
    own model is '<' 'reason' 'ing' '>': the mean of those rows is distinct and already means
    something. The output rows get the same treatment when they are not tied to the input ones.
    """
    matrices = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight.data_ptr() != matrices[0].data_ptr():
        matrices.append(output.weight)
    for token_id in token_ids:
        text = tokenizer.convert_ids_to_tokens(token_id)
        # The tokenizer's model alone, without its added tokens: the pieces of the original vocabulary.
        pieces = [t.id for t in tokenizer.backend_tokenizer.model.tokenize(text)]
        for weights in matrices:
            weights[token_id] = weights[pieces].mean(dim=0)


def free_device_memory() -> None:
    """Return freed model memory to the device before the next model is loaded (one GPU, 32 GB)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
