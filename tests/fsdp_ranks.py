"""FSDP2 as the Trainer applies it on GPUs, here on 2 CPU processes over gloo (tests/test_distributed.py).

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/fsdp_ranks.py MODEL_DIR

Accelerate turns FSDP on only for accelerator devices, so the Trainer cannot be asked for it on a
CPU; what it would do can. The plugin is built from the arguments lib/trainer.py gives the Trainer
(`sharding_arguments`), and Accelerate's own `fsdp2_prepare_model` shards the model: decoder layers
one unit each, Gemma's tied embedding and output head together. Each rank then computes the loss
on its half of a batch; the gradients (FSDP averages them over the ranks), one optimizer step and
the full state dict gathered for saving must equal an unsharded copy trained on the whole batch.
Any difference fails with an AssertionError, which torchrun reports.
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
from transformers import AutoModelForCausalLM, TrainingArguments

from lib.config import load_config
from lib.trainer import sharding_arguments

# float32 sums in another order (a reduce-scatter of two half-batch gradients): rounding, no more.
TOLERANCE = 1e-6


def main(model_dir: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    cfg = load_config(None, {"num_processes": world, "sharding": "fsdp"})  # the official run, sharded
    args = TrainingArguments(output_dir=tempfile.mkdtemp(), use_cpu=True, report_to="none", **sharding_arguments(cfg))
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
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, reference)]
    loss = model(input_ids=mine, labels=mine).loss
    loss.backward()
    reference(input_ids=ids, labels=ids).loss.backward()
    for (name, param), (_, ref) in zip(model.named_parameters(), reference.named_parameters(), strict=True):
        difference = (param.grad.full_tensor() - ref.grad).abs().max().item()
        assert difference < TOLERANCE, f"gradient of {name} differs by {difference}"
    for optimizer in optimizers:
        optimizer.step()
    # What saving gathers (Accelerate's get_state_dict for FSDP2, FULL_STATE_DICT): every weight, whole.
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    for name, ref in reference.state_dict().items():
        if rank == 0:  # cpu_offload leaves the gathered state dict on rank 0 only
            difference = (full[name] - ref).abs().max().item()
            assert difference < TOLERANCE, f"saved {name} differs by {difference} after one step"
    print(f"rank {rank}: FSDP2 over {world} processes: {units} sharded modules, tied embedding kept, "
          f"gradients, step and full state dict equal the unsharded model's", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
