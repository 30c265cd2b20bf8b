"""FSDP2 as the Trainer applies it on GPUs, here on 2 CPU processes over gloo (tests/test_distributed.py).

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/fsdp_ranks.py MODEL_DIR

Accelerate turns FSDP on only for accelerator devices, so the Trainer cannot be asked for it on a
CPU; what it would do can. The plugin is built from the arguments lib/training_worker.py gives the Trainer
(`sharding_arguments`), and Accelerate's own `fsdp2_prepare_model` shards the model: decoder layers
one unit each, Gemma's tied embedding and output head together. Each rank computes the loss on its
half of a batch; the gradients (FSDP averages them over the ranks) and, after an SGD step, the full
state dict gathered for saving must equal an unsharded copy trained on the whole batch. The optimizer
the Trainer creates for `adamw_torch` must step the sharded parameters, and transformers' Adafactor
must still fail on them, the reason lib/config.py refuses it with `sharding: fsdp`. Any difference
fails with an AssertionError, which torchrun reports.
"""

from __future__ import annotations

import copy
import sys
import tempfile
from types import SimpleNamespace

import torch
import torch.distributed as dist
from accelerate.utils import FullyShardedDataParallelPlugin
from accelerate.utils.fsdp_utils import fsdp2_prepare_model
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments
from transformers.optimization import Adafactor

from lib.config import load_config
from lib.training_worker import sharding_arguments

# float32 sums in another order (a reduce-scatter of two half-batch gradients): rounding, no more.
TOLERANCE = 1e-6
SGD_LR = 0.1  # plain SGD: the step is linear in the gradient, so equal gradients give equal weights


def main(model_dir: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    # The official run, sharded: what a multi-GPU run with `sharding: fsdp` gives the Trainer.
    cfg = load_config(None, {"num_processes": world, "sharding": "fsdp", "optimizer": "adamw_torch"})
    args = TrainingArguments(output_dir=tempfile.mkdtemp(), use_cpu=True, report_to="none", optim=cfg.optimizer,
                             learning_rate=cfg.learning_rate, **sharding_arguments(cfg))
    plugin = FullyShardedDataParallelPlugin(**args.fsdp_plugin_args)  # what the Trainer hands Accelerate
    reference = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager")
    accelerator = SimpleNamespace(state=SimpleNamespace(fsdp_plugin=plugin), torch_device_mesh=None,
                                  mixed_precision="no", device=torch.device("cpu"), is_main_process=rank == 0)
    model = fsdp2_prepare_model(accelerator, copy.deepcopy(reference))
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight, "the tie was broken"
    # Each decoder layer, the embedding-norm-head group and the root are sharded modules.
    units = sum(type(m).__name__.startswith("FSDP") for m in model.modules())
    assert units >= len(reference.model.layers) + 2, f"only {units} sharded modules"

    torch.manual_seed(0)
    ids = torch.randint(3, reference.config.vocab_size, (2 * world, 24))  # no padding: equal-weight halves
    mine = ids[2 * rank:2 * rank + 2]
    model(input_ids=mine, labels=mine).loss.backward()
    reference(input_ids=ids, labels=ids).loss.backward()
    for (name, param), (_, ref) in zip(model.named_parameters(), reference.named_parameters(), strict=True):
        difference = (param.grad.full_tensor() - ref.grad).abs().max().item()
        assert difference < TOLERANCE, f"gradient of {name} differs by {difference}"

    for m in (model, reference):
        torch.optim.SGD(m.parameters(), lr=SGD_LR).step()
    before = gathered(model)
    if rank == 0:  # cpu_offload leaves the gathered state dict on rank 0 only
        for name, ref in reference.state_dict().items():
            difference = (before[name] - ref).abs().max().item()
            assert difference < TOLERANCE, f"saved {name} differs by {difference} after a step"

    optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args)
    optimizer_cls(model.parameters(), **kwargs).step()
    after = gathered(model)
    if rank == 0:  # Adam's first step moves each weight by lr * g / (|g| + eps): never more than lr
        moved = max((after[name] - before[name]).abs().max().item() for name in before)
        assert 0 < moved <= cfg.learning_rate * (1 + 1e-3), f"{optimizer_cls.__name__} moved a weight by {moved}"

    try:
        Adafactor(model.parameters(), lr=cfg.learning_rate, scale_parameter=False, relative_step=False).step()
    except RuntimeError as exc:
        assert "DTensor" in str(exc), exc
    else:
        raise AssertionError("Adafactor now steps FSDP2's sharded parameters: lib/config.py may allow it")
    print(f"rank {rank}: FSDP2 over {world} processes: {units} sharded modules, tied embedding kept; gradients, "
          f"SGD step and full state dict equal the unsharded model's; {optimizer_cls.__name__} steps; Adafactor "
          "refused",
          flush=True)
    dist.destroy_process_group()


def gathered(model) -> dict:
    """What saving gathers (Accelerate's get_state_dict for FSDP2, FULL_STATE_DICT): every weight, whole."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


if __name__ == "__main__":
    main(sys.argv[1])
