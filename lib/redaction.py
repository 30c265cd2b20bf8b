"""Secrets never reach an artifact: every evidence file is written through `redact`.

The values of environment variables that look like credentials (HF_TOKEN, HUGGING_FACE_HUB_TOKEN,
*_API_KEY, ...) and the token huggingface_hub would use are replaced wherever they occur.
"""

from __future__ import annotations

import os
import re

SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL", re.IGNORECASE)
MIN_SECRET_LENGTH = 8  # shorter values ("1", "true") are settings, and replacing them would garble text
REDACTED = "[REDACTED]"


def secret_env_names() -> list[str]:
    return sorted(name for name in os.environ if SECRET_NAME.search(name))


def secret_values() -> list[str]:
    import huggingface_hub  # here: writing evidence needs it, reading it (lib.verify) does not

    values = {os.environ[name] for name in secret_env_names()}
    values.add(huggingface_hub.get_token() or "")  # also the one `hf auth login` stored on disk
    # Longest first, so a secret that contains another is replaced whole.
    return sorted((v for v in values if len(v) >= MIN_SECRET_LENGTH), key=len, reverse=True)


def redact(text: str) -> str:
    for value in secret_values():
        text = text.replace(value, REDACTED)
    return text
