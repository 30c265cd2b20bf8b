"""The embedded default: a tiny Gemma 3 model and a tokenizer built from the training texts.

It exists so that the whole run works on a machine with no GPU and no model hub. It is
saved as an ordinary model folder and then loaded through the same code as a hub model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

from lib.config import REPO_ROOT
from lib.render import END_OF_TURN, RESPONSE_TAGS, START_OF_TURN, render_prompt, render_response

MODEL_CONFIG = REPO_ROOT / "models" / "embedded" / "config.json"
# Gemma's own ids for the first four special tokens, so ids mean the same as in Gemma.
SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", START_OF_TURN, END_OF_TURN]


def build_tokenizer(traces: list[dict], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on the rendered training texts; deterministic for the same input.

    Byte-level, so any prompt (emoji, ×, ÷) encodes without unknown tokens. It adds BOS
    itself when asked to, as Gemma's tokenizer does, so the one-BOS rule is tested for real.
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


def build_embedded_model(traces: list[dict], seed: int, out_dir: Path) -> Path:
    """Build, randomly initialise (seeded) and save the tiny model and its tokenizer to `out_dir`."""
    spec = json.loads(MODEL_CONFIG.read_text(encoding="utf-8"))
    tokenizer = build_tokenizer(traces, spec["vocab_size"])
    config = Gemma3TextConfig(**{k: v for k, v in spec.items() if k not in ("architectures", "model_type")})
    config.vocab_size = len(tokenizer)
    config.pad_token_id = tokenizer.pad_token_id
    config.bos_token_id = tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
