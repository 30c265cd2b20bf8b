"""Pre-flight checks that need no GPU and no hub: architecture list, credentials, memory estimate."""

from __future__ import annotations

import huggingface_hub
import pytest
from transformers import GemmaConfig

from lib import model_source
from lib.preflight import cuda_arch_supported
from lib.resources import GIB, estimate_training_memory
from tests.conftest import replace

# torch 2.7 cu126 wheels: no Blackwell; cu128 wheels add sm_100 and sm_120.
CU126 = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]
CU128 = CU126 + ["sm_100", "sm_120"]


@pytest.mark.parametrize(("capability", "archs", "ok"), [
    ((12, 0), CU126, False),  # the RTX 5090 on a wheel without sm_120: the original failure mode
    ((12, 0), CU128, True),
    ((8, 9), CU126, True),  # an RTX 4090 (8.9) runs sm_86 cubins (same major, lower minor)
    ((9, 0), ["sm_80", "sm_86"], False),  # a cubin never runs on a newer major
    ((12, 0), ["sm_80", "compute_90"], True),  # PTX is compiled on the fly for later devices
    ((7, 5), ["compute_80"], False),  # but not for earlier ones
])
def test_cuda_architecture_rule(capability, archs, ok):
    assert cuda_arch_supported(capability, archs) is ok


def test_hub_model_without_credentials_or_cache_fails_with_the_fix(monkeypatch):
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, name: None)
    with pytest.raises(RuntimeError, match="no Hugging Face credentials: set HF_TOKEN or run `hf auth login`"):
        model_source.check_hub_access("google/gemma-2b")


def test_hub_model_without_credentials_but_cached_passes(monkeypatch):
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, name: "/cache/config.json")
    assert "in the local cache" in model_source.check_hub_access("google/gemma-2b")


@pytest.fixture(scope="module")
def gemma_2b(tmp_path_factory) -> str:
    """Gemma 2B's published architecture (google/gemma-2b config.json), weights never created."""
    folder = tmp_path_factory.mktemp("gemma-2b")
    GemmaConfig(
        vocab_size=256000, hidden_size=2048, intermediate_size=16384, num_hidden_layers=18,
        num_attention_heads=8, num_key_value_heads=1, head_dim=256, max_position_embeddings=8192,
    ).save_pretrained(folder)
    return str(folder)


def test_memory_estimate_of_the_official_run(gemma_2b, embedded_cfg):
    official = replace(embedded_cfg, device="cuda", dtype="bfloat16", optimizer="adafactor", batch_size=1, max_seq_length=512)
    footprint = estimate_training_memory(gemma_2b, official)
    assert footprint.parameters == 2_506_172_416  # Gemma 2B's published parameter count
    assert footprint.weights == footprint.gradients == 2 * footprint.parameters
    assert footprint.optimizer < footprint.weights / 50  # Adafactor's factored state is small
    assert 10 * GIB < footprint.total < 30 * GIB  # fits the RTX 5090's 32 GB, as the original run did
    adamw = estimate_training_memory(gemma_2b, replace(official, optimizer="adamw_torch"))
    assert adamw.optimizer == 2 * footprint.weights
    longer = estimate_training_memory(gemma_2b, replace(official, batch_size=4))
    assert longer.activations == 4 * footprint.activations and longer.logits == 4 * footprint.logits
    # Logits only where the loss reads them: a 128-token response needs a quarter of 512 positions.
    response_only = estimate_training_memory(gemma_2b, official, loss_tokens=128)
    assert response_only.logits * 4 == footprint.logits and response_only.total < footprint.total
