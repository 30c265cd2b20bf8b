"""No secret from the environment reaches an evidence file."""

from __future__ import annotations

import huggingface_hub

from lib.evidence import write_text
from lib.redaction import REDACTED, redact, secret_env_names

CANARY = "hf_CANARYcanary0123456789"


def test_tokens_in_the_environment_are_redacted_from_evidence(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", CANARY)
    monkeypatch.setenv("MY_SERVICE_API_KEY", "sk-" + "x" * 20)
    path = write_text(tmp_path / "log.txt", f"token={CANARY} key=sk-{'x' * 20} step 1\n")
    assert path.read_text(encoding="utf-8") == f"token={REDACTED} key={REDACTED} step 1\n"
    assert {"HF_TOKEN", "MY_SERVICE_API_KEY"} <= set(secret_env_names())


def test_the_stored_login_token_is_redacted_too(monkeypatch):
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_storedByLogin12345")
    assert redact("Bearer hf_storedByLogin12345") == f"Bearer {REDACTED}"


def test_short_values_and_ordinary_names_are_left_alone(monkeypatch):
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")  # a setting, too short to be a secret
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert redact("parallelism false, offline 1") == "parallelism false, offline 1"
