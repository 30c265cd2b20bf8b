"""Models built from a committed config: seeded random weights and a tokenizer trained on the training texts.

The embedded default (models/embedded/config.json, a tiny Gemma 3) exists so that the whole run works on a
machine with no GPU and no model hub; the same builder makes Gemma 2B's published architecture
(models/gemma-2b/config.json) to measure memory and speed at full size without the hub. Each is saved as an
ordinary model folder and then loaded through the same code as a hub model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerFast

from lib.config import BUILT_MODELS, REPO_ROOT
from lib.model_loading import DTYPES
from lib.prompt_format import END_OF_TURN, RESPONSE_TAGS, START_OF_TURN, render_prompt, render_response

# Gemma's own ids for the first four special tokens, so ids mean the same as in Gemma.
SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", START_OF_TURN, END_OF_TURN]
# Random bytes are drawn in slices of this many weights (16 MB), so no matrix needs a second copy of itself.
INIT_SLICE = 1 << 24


def build_tokenizer(traces: list[dict], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on the rendered training texts; deterministic for the same input.

    Byte-level, so any prompt (emoji, ×, ÷) encodes without unknown tokens. It adds BOS
    itself when asked to, as Gemma's tokenizer does, so the one-BOS rule is tested for real.
    At most `vocab_size` tokens; fewer when the texts hold no more pairs to merge (~1,570 here).
    """
    texts = [render_prompt(t["prompt"], "") + render_response(t["steps"], t["final_answer"]) for t in traces]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    # One token per digit, as in Gemma's own tokenizer: arithmetic is then learnable digit by
    # digit instead of memorised per number.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(RESPONSE_TAGS),
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in RESPONSE_TAGS])
    bos_id = tok.token_to_id("<bos>")
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens=[START_OF_TURN, END_OF_TURN],
    )


def build_model_from_config(config_path: Path, traces: list[dict], seed: int, dtype: str, out_dir: Path) -> Path:
    """Build the architecture in `config_path` with seeded random weights in `dtype` (a key of
    lib.model_loading.DTYPES) and a tokenizer trained on `traces`; save both to `out_dir`.

    The embedding keeps the config's `vocab_size` rows even where the data-trained tokenizer is
    smaller (Gemma 2B: 256,000 rows for ~1,570 tokens), so the memory is the architecture's.
    """
    tokenizer = build_tokenizer(traces, read_config(config_path).vocab_size)
    model = init_model(read_config(config_path, tokenizer), seed, DTYPES[dtype])
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def model_config_path(model_name: str) -> Path:
    """models/<folder>/config.json of a model_name that lib.config.BUILT_MODELS lists."""
    return REPO_ROOT / "models" / BUILT_MODELS[model_name] / "config.json"


def read_config(config_path: Path, tokenizer: PreTrainedTokenizerFast | None = None) -> PretrainedConfig:
    """The model config in a committed config.json, with `tokenizer`'s special token ids if given."""
    spec = json.loads(Path(config_path).read_text(encoding="utf-8"))
    config = AutoConfig.for_model(spec.pop("model_type"), **spec)
    if tokenizer is not None:
        config.pad_token_id = tokenizer.pad_token_id
        config.bos_token_id = tokenizer.bos_token_id
        config.eos_token_id = tokenizer.eos_token_id
    return config


@torch.no_grad()
def init_model(config: PretrainedConfig, seed: int, dtype: torch.dtype, device: str = "cpu",
               attn_implementation: str | None = None) -> PreTrainedModel:
    """The model for `config` in `dtype` on `device`, every weight matrix drawn from `seed`.

    transformers' own initialisation runs torch's default init and then draws each matrix again with
    torch's normal_, element by element on one core: ~110 s for Gemma 2B in bfloat16 on this project's
    2-core machine (docs/BENCHMARKS.md). Here the model is created on the meta device (no memory, no init)
    and given empty storage in `dtype`; each matrix gets one random byte per weight from numpy's PCG64 (the
    same bytes on every machine), read as a signed integer and scaled: a uniform distribution on 256 levels
    with the config's `initializer_range` as standard deviation. The model's own init then sets the rest
    (norms, rotary tables, scales), leaving the filled matrices alone.
    """
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    model.to_empty(device=device)
    model.tie_weights()  # to_empty gives tied parameters separate storage; one matrix is drawn for both
    std = getattr(config.get_text_config(), "initializer_range", 0.02)
    scale = std * 3**0.5 / 128  # int8 levels -128..127: U(-a, a) has standard deviation a / sqrt(3)
    rng = np.random.default_rng(seed)
    for _, parameter in model.named_parameters():  # tied matrices appear once
        if parameter.dim() < 2:
            continue
        flat = parameter.view(-1)
        for start in range(0, flat.numel(), INIT_SLICE):
            part = flat[start:start + INIT_SLICE]
            levels = torch.frombuffer(bytearray(rng.bytes(part.numel())), dtype=torch.int8)
            part.copy_(levels).mul_(scale)  # to the device and the dtype in one copy
        parameter._is_hf_initialized = True  # transformers' init leaves flagged tensors alone
    for module in model.modules():  # as transformers' init does: the padding token embeds to zero
        if isinstance(module, torch.nn.Embedding) and module.padding_idx is not None:
            module.weight[module.padding_idx] = 0
    torch.manual_seed(seed)  # for any part the model's own init draws at random
    model.init_weights()
    return model
