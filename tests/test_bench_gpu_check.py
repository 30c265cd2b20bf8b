"""bench/gpu_check.py, the check waiting for a lent GPU, runs end to end on the CPU (--tiny), so it cannot rot."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from lib.config import REPO_ROOT


def run_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "bench/gpu_check.py", *args], cwd=REPO_ROOT, capture_output=True, text=True,
        encoding="utf-8", env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )


def test_the_check_runs_on_the_cpu_with_the_embedded_config(tmp_path):
    done = run_check("--tiny", "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "models/embedded/config.json in float32" in out
    assert re.search(r"^ours: [\d,]+ non-padding tokens in [\d.]+ s over steps 2-3: [\d,.]+ tokens/s; MFU [\d.]+%; "
                     r"CPU \d+% of one core \(no GPU sampled\)", out, re.M)
    # The sampler ran beside both trainings: its timeline, its facts, its drawing.
    lines = (tmp_path / "system_metrics.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["phase"] for r in records if r["kind"] == "stop"] == ["ours", "original"]
    assert sum(r["kind"] == "sample" for r in records) >= 4 and (tmp_path / "system_metrics.png").is_file()
    assert re.search(r"^machine: ours \(\d+ s\): kernel \d+% of one core \(of \d+\), peak [\d.]+ GiB resident; "
                     r"original \(", out, re.M)
    assert re.search(r"^memory: peak RSS [\d.]+ GiB against the estimated total [\d.]+ GiB", out, re.M)
    assert re.search(r"^original: [\d,]+ non-padding tokens .* tokens/s", out, re.M)
    assert re.search(r"^speedup: [\d.]+x", out.splitlines()[-1])


def test_the_check_measures_lora_the_way_a_run_trains_it():
    done = run_check("--tiny", "--finetune", "lora")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "4-bit quantization: not needed (finetune: lora)" in out
    assert re.search(r"^finetune: lora; training [\d,]+ of [\d,]+ parameters", out, re.M)
    assert re.search(r"^memory: peak RSS [\d.]+ GiB against the estimated total [\d.]+ GiB", out, re.M)
    assert "original:" not in out  # a full fine-tune is no like-for-like comparison


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the check would run for real")
def test_without_a_gpu_it_says_how_to_check_the_script():
    done = run_check()
    assert done.returncode != 0 and "--tiny" in done.stderr
