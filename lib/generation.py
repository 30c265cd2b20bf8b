"""Greedy generation in batches: left padding, KV cache, stop at end-of-turn or EOS; a rank's share of the batches."""

from __future__ import annotations

import math
import time

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lib.prompt_format import encode_prompt, stop_token_ids


@torch.inference_mode()
def generate_greedy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    batch_size: int,
    max_new_tokens: int,
    label: str = "generate",
) -> list[dict]:
    """One record per prompt: the decoded output (tags kept), tokens generated, seconds per item."""
    tokenizer.padding_side = "left"  # decoder-only: new tokens must follow each prompt directly
    stops = stop_token_ids(tokenizer)
    encoded = [encode_prompt(p, tokenizer) for p in prompts]
    model.eval()
    results: list[dict] = []
    t_start = time.perf_counter()
    for start in range(0, len(encoded), batch_size):
        t0 = time.perf_counter()
        batch = tokenizer.pad({"input_ids": encoded[start:start + batch_size]}, return_tensors="pt")
        batch = batch.to(model.device)
        out = model.generate(
            **batch,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=stops,
            pad_token_id=tokenizer.pad_token_id,
        )
        new_tokens = out[:, batch["input_ids"].shape[1]:].tolist()
        seconds = (time.perf_counter() - t0) / len(new_tokens)
        for row in new_tokens:
            end = next((i for i, t in enumerate(row) if t in stops), None)
            kept = row if end is None else row[:end]
            results.append({
                "output": tokenizer.decode(kept, skip_special_tokens=True),
                "tokens": len(kept) + (end is not None),
                "stopped": end is not None,
                "seconds": round(seconds, 4),
            })
        print(f"{label}: {len(results)}/{len(prompts)} items, {time.perf_counter() - t_start:.1f} s", flush=True)
    return results


def shard_batches(num_items: int, batch_size: int, rank: int, world_size: int) -> list[int]:
    """The indices of the items that rank `rank` of `world_size` generates for: whole batches.

    Batch k holds items k*B .. (k+1)*B-1, exactly as generate_greedy forms them in one process, and
    rank r takes batches r, r+N, r+2N, ... Each batch is padded and computed as in one process, so its
    outputs are the same; only the last batch can be short, and it stays last in its rank's share.
    """
    batches = range(rank, math.ceil(num_items / batch_size), world_size)
    return [i for k in batches for i in range(k * batch_size, min((k + 1) * batch_size, num_items))]
