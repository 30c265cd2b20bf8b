"""Pre-flight checks that need no GPU and no hub: architecture list, credentials, memory estimate."""

from __future__ import annotations

import huggingface_hub
import pytest

from lib import model_source
from lib.preflight import cuda_arch_supported

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
