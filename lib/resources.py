"""What a run needs before it starts: memory for training and disk for the checkpoint.

An estimate from the model's config, checked against measurements (bench/bench_memory.py,
docs/BENCHMARKS.md): no library computes this for a Trainer run (accelerate's estimator counts
weights only), hence the arithmetic here. Training's memory peaks in one of two phases:

- forward and backward: weights, gradients (filled in as the backward frees activations; counted
  whole), the activations kept for the backward pass and the logits the loss reads;
- the optimizer step: weights, gradients, the optimizer's state, and the temporaries it makes for
  one parameter at a time (the largest one sets the peak).

On a GPU the tensors' peak is the larger of the two (what torch.cuda.max_memory_allocated
measures), and the CUDA contexts and the caching allocator's slack come on top. On a CPU the
process's resident memory is what counts (it is what the OS runs out of), and it does not fall
back between the phases: glibc keeps the heap of the many small activation tensors resident
after the backward frees them, so the optimizer step's temporaries come on top of it. There the
estimate adds the phases, plus the process's own memory (Python, torch, the data).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from lib import lora
from lib.config import RunConfig
from lib.units import GIB

BYTES = {"bfloat16": 2, "float32": 4}
# Per token and layer, in activation bytes per element, kept for the backward pass: attention
# block ~15 hidden-sized tensors, a gated MLP ~8 intermediate-sized ones (Korthikanti et al.,
# "Reducing Activation Recomputation in Large Transformer Models", 2022, adapted to GeGLU), and
# eager attention keeps ~4 score tensors of sequence length per head.
HIDDEN_TENSORS, INTERMEDIATE_TENSORS, SCORE_TENSORS = 15, 8, 4
# The loss upcasts logits to float32 and keeps them, their softmax and their gradient; only at
# the positions the loss reads (the response), as lib/training_worker.py computes them.
LOGIT_COPIES = 3
# LoRA/QLoRA (lib/lora.py): peft keeps the adapters, their gradients and optimizer state in float32; NF4 with
# double quantization stores 4 bits a weight, an 8-bit constant per block of 64 and a float32 one per 256 blocks.
ADAPTER_BYTES = 4
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
# peft's trainable tokens on a tied embedding: the merged matrix kept for the output head's backward, and one
# dense gradient of its size in the backward.
TRAINED_TOKEN_COPIES = 2
# A CPU process's resident memory before the model: the Python interpreter, torch, transformers and
# datasets loaded, the tokenizer and the encoded records. Measured 0.49 GiB (embedded, Gemma 2B shape)
# and 0.80 GiB (gemma-3-270m, whose tokenizer has 262,144 tokens) by bench/bench_memory.py
# (docs/BENCHMARKS.md); rounded up.
CPU_PROCESS_BYTES = 1 * GIB
# On a GPU: the CUDA context (the worker's, and the notebook kernel's that checked free memory)
# and the caching allocator's reserved-but-unallocated slack. Not yet measured (no GPU has been
# lent; bench/gpu_check.py prints the allocator's peak against this estimate when one is).
CUDA_CONTEXT_BYTES = 1 * GIB
CUDA_ALLOCATOR_FACTOR = 1.2


@dataclass(frozen=True)
class Footprint:
    """The estimate, per component, in bytes; `to_dict()` for the evidence files.

    With finetune lora or qlora, gradients, optimizer state and its step count the adapters alone, and the weights
    are the frozen base (4-bit for qlora) plus the adapters; the activations add what the adapters keep.
    """

    device: str
    parameters: int
    tokens: int  # micro-batch x the longest record's tokens: the activations' positions
    weights: int
    gradients: int
    optimizer: int  # the optimizer's state
    optimizer_step: int  # temporaries of the optimizer step, for the largest parameter
    activations: int
    logits: int
    process: int  # CPU: the process beyond its tensors; GPU: 0 (see cuda_overhead)
    trainable: int  # the parameters training changes: all of them, or the adapters'
    saved: int  # the final checkpoint's bytes: the weights, or the adapter (and the merged weights with merge_adapter)

    @property
    def forward_backward(self) -> int:
        return self.weights + self.gradients + self.activations + self.logits

    @property
    def optimizer_phase(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.optimizer_step

    @property
    def tensors(self) -> int:
        """The tensors' peak: what torch.cuda.max_memory_allocated measures on a GPU."""
        return max(self.forward_backward, self.optimizer_phase)

    @property
    def cuda_overhead(self) -> int:
        """What a GPU needs beyond the tensors' peak: allocator slack and the CUDA contexts."""
        if self.device != "cuda":
            return 0
        return int(self.tensors * (CUDA_ALLOCATOR_FACTOR - 1)) + CUDA_CONTEXT_BYTES

    @property
    def total(self) -> int:
        """The bytes training needs at its peak: the device memory on a GPU; on a CPU the process's
        resident memory, where freed activations stay resident through the optimizer step."""
        if self.device == "cuda":
            return self.tensors + self.cuda_overhead
        return (self.process + self.weights + self.gradients + self.optimizer + self.optimizer_step
                + self.activations + self.logits)

    def to_dict(self) -> dict:
        """Every component and the derived phases, in bytes: JSON-ready."""
        derived = ("forward_backward", "optimizer_phase", "tensors", "cuda_overhead", "total")
        return {**asdict(self), **{name: getattr(self, name) for name in derived}}

    def describe(self) -> str:
        parts = ("weights", "gradients", "optimizer", "optimizer_step", "activations", "logits", "process")
        extra = f", CUDA overhead {self.cuda_overhead / GIB:.2f}" if self.device == "cuda" else ""
        trains = "" if self.trainable == self.parameters else f" (training {self.trainable:,} of {self.parameters:,} parameters)"
        return (", ".join(f"{p.replace('_', ' ')} {getattr(self, p) / GIB:.2f}" for p in parts) + extra
                + f" -> {self.total / GIB:.2f} GiB" + trains)


def count_parameters(model_source: str) -> tuple[int, object]:
    """Parameters of the model at `model_source`, counted on the meta device (no memory used)."""
    shapes, config = _parameter_shapes(model_source)
    return sum(_numel(s) for s in shapes), config


def _parameter_shapes(model_source: str) -> tuple[list[tuple[int, ...]], object]:
    """The shape of every distinct parameter (tied ones once), from the config alone."""
    config = AutoConfig.from_pretrained(model_source)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return [tuple(p.shape) for p in model.parameters()], config


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for size in shape:
        n *= size
    return n


def estimate_training_memory(model_source: str, cfg: RunConfig, loss_tokens: int | None = None,
                             longest_tokens: int | None = None, added_rows: int = 0) -> Footprint:
    """The footprint of training `cfg.batch_size` records at a time, in the run's fine-tuning mode.

    `longest_tokens`: the longest record's length in tokens; length-grouped batches pad to their
    longest record, so activations are counted at micro-batch x this many positions (unknown:
    `cfg.max_seq_length`). `loss_tokens`: the most positions of one record the loss reads (its
    response); training computes logits only there (lib/training_worker.py). Unknown: every position.
    `added_rows`: embedding rows the tokenizer adds to the base (the response tags); an adapter trains them.
    """
    shapes, config = _parameter_shapes(model_source)
    text = getattr(config, "text_config", config)
    n = sum(_numel(s) for s in shapes)
    b = BYTES[cfg.dtype]
    length = longest_tokens or cfg.max_seq_length
    tokens = cfg.batch_size * length
    per_token_layer = (
        HIDDEN_TENSORS * text.hidden_size
        + INTERMEDIATE_TENSORS * text.intermediate_size
        + SCORE_TENSORS * text.num_attention_heads * length
    ) * b
    n += added_rows * text.hidden_size  # the base's embedding grown for the tags (lib/model_loading.py)
    if cfg.trains_adapter:
        trained, base, extra = _adapter_terms(model_source, cfg, text, tokens, added_rows)
        adapters = _numel_all(trained)
        # peft counts the adapters among all parameters; it keeps them in float32 whatever the base's dtype
        parameters, weights = n + adapters, base + adapters * ADAPTER_BYTES
        saved = adapters * ADAPTER_BYTES + (n * b if cfg.merge_adapter else 0)
        state_bytes = ADAPTER_BYTES
    else:
        trained, extra, state_bytes = shapes, 0, b
        parameters, weights, saved = n, n * b, n * b
    return Footprint(
        device=cfg.device,
        parameters=parameters,
        tokens=tokens,
        weights=weights,
        gradients=_numel_all(trained) * state_bytes,
        optimizer=optimizer_state_bytes(cfg.optimizer, trained, state_bytes),
        optimizer_step=optimizer_step_bytes(cfg.optimizer, trained, state_bytes, cfg.device),
        activations=tokens * text.num_hidden_layers * per_token_layer + extra,
        logits=cfg.batch_size * (loss_tokens or length) * text.vocab_size * 4 * LOGIT_COPIES,
        process=CPU_PROCESS_BYTES if cfg.device == "cpu" else 0,
        trainable=_numel_all(trained),
        saved=saved,
    )


def _numel_all(shapes: list[tuple[int, ...]]) -> int:
    return sum(_numel(s) for s in shapes)


def _adapter_terms(model_source: str, cfg: RunConfig, text, tokens: int, added_rows: int
                   ) -> tuple[list[tuple[int, ...]], int, int]:
    """LoRA/QLoRA: (the trained tensors' shapes, the frozen base's bytes, the activations the adapters add).

    peft wraps a model built on the meta device (no memory), so the adapters' shapes are exactly what training
    makes, and a target module the model lacks fails here, in pre-flight. The frozen base: in the run's dtype, or
    for qlora its linear layers in 4-bit NF4 and the rest in float32 (peft's prepare_model_for_kbit_training
    upcasts them). Activations: with dropout, each
    adapted layer keeps a dropped-out copy of its input and the mask; rows added to a tied embedding are trained
    through peft's trainable tokens, which build the embedding matrix anew at each forward and its dense gradient
    at each backward (TRAINED_TOKEN_COPIES copies).
    """
    from peft import get_peft_model  # here, as in lib/lora.py: only an adapter run needs peft

    config = AutoConfig.from_pretrained(model_source)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    b = BYTES[cfg.dtype]
    output = model.get_output_embeddings()
    linear = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not output}
    quantized = sum(p.numel() for p in model.parameters() if id(p) in linear)
    rest = sum(p.numel() for p in model.parameters()) - quantized
    peft_model = get_peft_model(model, lora.adapter_config(cfg, []))  # added rows: counted below, not on meta
    adapted = {name.removesuffix(".base_layer"): module for name, module in peft_model.named_modules()
               if name.endswith(".base_layer")}
    trained = [tuple(p.shape) for p in peft_model.parameters() if p.requires_grad]
    trained += [(added_rows, text.hidden_size)] if added_rows else []
    rest += added_rows * text.hidden_size
    base = int(quantized * NF4_BYTES) + rest * 4 if cfg.finetune == "qlora" else (quantized + rest) * b
    kept = sum(m.in_features for m in adapted.values()) * (b + 1) if cfg.lora_dropout > 0 else 0
    tied_rows = TRAINED_TOKEN_COPIES * text.vocab_size * text.hidden_size * b if added_rows else 0
    return trained, base, tokens * kept + tied_rows


def optimizer_state_bytes(optimizer: str, shapes: list[tuple[int, ...]], b: int) -> int:
    """The optimizer's state after its first step.

    adamw_torch keeps two moments per parameter, in the parameters' dtype. transformers' Adafactor
    (no first moment by default) keeps, in float32, a row and a column vector for each matrix and a
    full second moment for each vector (the norms).
    """
    if optimizer == "adamw_torch":
        return 2 * b * sum(_numel(s) for s in shapes)
    return 4 * sum(_numel(s[:-1]) + _numel(s[:-2] + s[-1:]) if len(s) >= 2 else _numel(s) for s in shapes)


def optimizer_step_bytes(optimizer: str, shapes: list[tuple[int, ...]], b: int, device: str) -> int:
    """The temporaries the optimizer step holds at its peak, beyond weights, gradients and state.

    transformers' Adafactor updates one parameter at a time in float32: a bfloat16 parameter and its
    gradient are upcast (2 copies), and the squared gradient and the factored estimate coexist
    (2 more), so the largest parameter (Gemma's embedding) sets the peak: 4 float32 copies of it, or
    2 when the parameters are float32 already. torch's AdamW on a CPU also goes one parameter at a
    time (2 temporaries: the square root and its quotient); on a GPU its multi-tensor path takes the
    square root of every second moment at once (one copy of all parameters).
    """
    largest = max(_numel(s) for s in shapes)
    if optimizer == "adamw_torch":
        return b * sum(_numel(s) for s in shapes) if device == "cuda" else 2 * b * largest
    return 4 * largest * (4 if b == 2 else 2)
