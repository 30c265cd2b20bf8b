"""Loading a causal LM and its tokenizer: one path for hub ids and local folders alike."""

from __future__ import annotations

import gc

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as transformers_logging

from lib.config import RunConfig
from lib.render import RESPONSE_TAGS

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
    """The model on the configured device and dtype; embeddings grown if tags were added."""
    model = AutoModelForCausalLM.from_pretrained(
        source,
        dtype=DTYPES[cfg.dtype],
        # Gemma 2 needs eager attention for its logit soft-capping; a parameter for the rest.
        attn_implementation=cfg.attn_implementation,
    )
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    return model.to(cfg.device)


def free_device_memory() -> None:
    """Return freed model memory to the device before the next model is loaded (one GPU, 32 GB)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
