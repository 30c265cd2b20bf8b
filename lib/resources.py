"""What a run needs before it starts: device memory for training and disk for the checkpoint.

An estimate from the model's config, not a measurement: weights, gradients, optimizer state,
activations and logits for the configured micro-batch and sequence length. No library computes
this for a Trainer run (accelerate's estimator counts weights only), hence the arithmetic here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from lib.config import RunConfig

GIB = 2**30
BYTES = {"bfloat16": 2, "float32": 4}
# Per token and layer, in activation bytes per element, kept for the backward pass: attention
# block ~15 hidden-sized tensors, a gated MLP ~8 intermediate-sized ones (Korthikanti et al.,
# "Reducing Activation Recomputation in Large Transformer Models", 2022, adapted to GeGLU), and
# eager attention keeps ~4 score tensors of sequence length per head.
HIDDEN_TENSORS, INTERMEDIATE_TENSORS, SCORE_TENSORS = 15, 8, 4
# The loss upcasts logits to float32 and keeps them, their softmax and their gradient; only at
# the positions the loss reads (the response), as lib/trainer.py computes them.
LOGIT_COPIES = 3
# CUDA context, allocator caching and fragmentation on top of the sum (uncalibrated: see
# docs/BENCHMARKS.md for the measured peak when a GPU was available).
OVERHEAD_FACTOR, OVERHEAD_FIXED = 1.2, 1.0 * GIB


@dataclass(frozen=True)
class Footprint:
    parameters: int
    weights: int
    gradients: int
    optimizer: int
    activations: int
    logits: int

    @property
    def total(self) -> int:
        """The bytes training needs at its peak, overhead included."""
        raw = self.weights + self.gradients + self.optimizer + self.activations + self.logits
        return int(raw * OVERHEAD_FACTOR + OVERHEAD_FIXED)

    @property
    def checkpoint(self) -> int:
        """The bytes of the saved final model."""
        return self.weights

    def describe(self) -> str:
        parts = ("weights", "gradients", "optimizer", "activations", "logits")
        return ", ".join(f"{p} {getattr(self, p) / GIB:.2f}" for p in parts) + f" -> {self.total / GIB:.2f} GiB"


def count_parameters(model_source: str) -> tuple[int, object]:
    """Parameters of the model at `model_source`, counted on the meta device (no memory used)."""
    config = AutoConfig.from_pretrained(model_source)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters()), config


def estimate_training_memory(model_source: str, cfg: RunConfig, loss_tokens: int | None = None) -> Footprint:
    """The footprint of training at micro-batch `cfg.batch_size` and `cfg.max_seq_length` tokens.

    `loss_tokens`: the most positions of one record the loss reads (its response); training
    computes logits only there (lib/trainer.py). Unknown, every position is counted.
    """
    n, config = count_parameters(model_source)
    text = getattr(config, "text_config", config)
    b = BYTES[cfg.dtype]
    tokens = cfg.batch_size * cfg.max_seq_length
    # adamw_torch keeps two moments per parameter; Adafactor factors its second moment into
    # row and column vectors, and transformers' Adafactor keeps no first moment by default.
    optimizer = 2 * n * b if cfg.optimizer == "adamw_torch" else n * b // 100
    per_token_layer = (
        HIDDEN_TENSORS * text.hidden_size
        + INTERMEDIATE_TENSORS * text.intermediate_size
        + SCORE_TENSORS * text.num_attention_heads * cfg.max_seq_length
    ) * b
    return Footprint(
        parameters=n,
        weights=n * b,
        gradients=n * b,
        optimizer=optimizer,
        activations=tokens * text.num_hidden_layers * per_token_layer,
        logits=cfg.batch_size * (loss_tokens or cfg.max_seq_length) * text.vocab_size * 4 * LOGIT_COPIES,
    )
