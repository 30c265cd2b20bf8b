"""Fault injection for the failure tests: `PYTHONPATH=tests/faults M44_FAULT=<name>[,<name>...] [M44_FAULT_RANK=<r>]`.

Python imports `sitecustomize` at start-up, so the notebook kernel and the training worker
(both children of the test) get the fault without a line of fault code in lib/. Each fault
patches a library function the moment its module is first imported, so a process that never
imports it pays nothing. Under torchrun every rank imports it; M44_FAULT_RANK limits the fault
to one rank (torchrun's RANK), and without it every process gets the fault.
"""

from __future__ import annotations

import errno
import importlib.abc
import importlib.util
import os
import signal
import sys
import time
from pathlib import Path
from types import SimpleNamespace

FAULT = os.environ.get("M44_FAULT", "")  # a name of FAULTS, or several separated by commas (faults that do not interfere)
AT_STEP = 3  # training faults fire once the Trainer has reached this optimizer step
# A process outside torchrun has no RANK; a fault meant for one rank spares it and every other rank.
ON_THIS_RANK = os.environ.get("M44_FAULT_RANK", os.environ.get("RANK")) == os.environ.get("RANK")


def _on_import(module_name: str, patch) -> None:
    """Call patch(module) right after `module_name` is first imported."""

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != module_name:
                return None
            sys.meta_path.remove(self)  # one shot, and the lookup below must not find this finder
            spec = importlib.util.find_spec(name)
            original = spec.loader.exec_module

            def exec_module(module):
                original(module)
                patch(module)

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, Finder())


def _at_step(action):
    """Wrap Trainer.training_step so that `action` runs at AT_STEP, in the training worker.

    With M44_FAULT_MARK set, the time it first fires is written to that file: a test can measure
    how long the run takes to end after the fault.
    """

    def patch(trainer_module):
        original = trainer_module.Trainer.training_step

        def training_step(self, *args, **kwargs):
            if self.state.global_step >= AT_STEP:
                mark = Path(os.environ.get("M44_FAULT_MARK", ""))
                if mark.name and not mark.exists():
                    mark.write_text(repr(time.time()), encoding="utf-8")
                action(self)
            return original(self, *args, **kwargs)

        trainer_module.Trainer.training_step = training_step

    _on_import("transformers.trainer", patch)


def _once(action):
    fired = []

    def once(trainer):
        if not fired:
            fired.append(True)
            action(trainer)

    return once


def _oom(trainer):
    import torch

    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected by the test)")


def _nan_loss(trainer_module):
    original = trainer_module.Trainer.compute_loss

    def compute_loss(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        if self.state.global_step < AT_STEP:
            return result
        if isinstance(result, tuple):
            return (result[0] * float("nan"), *result[1:])
        return result * float("nan")

    trainer_module.Trainer.compute_loss = compute_loss


def _disk_full(safetensors_torch):
    original = safetensors_torch.save_file

    def save_file(tensors, filename, *args, **kwargs):
        if "checkpoints" not in Path(filename).parts:  # pre-flight saves the embedded model: let it
            return original(tensors, filename, *args, **kwargs)
        Path(filename).write_bytes(b"\0" * 1024)  # a partial file, as a full disk leaves one
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filename))

    safetensors_torch.save_file = save_file


def _generation_error(generation_utils):
    def generate(self, *args, **kwargs):
        raise RuntimeError("generation failed (injected by the test)")

    generation_utils.GenerationMixin.generate = generate


def _unsupported_gpu(torch_module):
    """A simulated RTX 5090 (sm_120) under a torch build without sm_120 kernels."""
    cuda = torch_module.cuda
    cuda.is_available = lambda: True
    cuda.device_count = lambda: 1
    cuda.get_device_name = lambda device=None: "NVIDIA GeForce RTX 5090 (simulated)"
    cuda.get_device_capability = lambda device=None: (12, 0)
    cuda.get_arch_list = lambda: ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]
    cuda.get_device_properties = lambda device=None: SimpleNamespace(
        name="NVIDIA GeForce RTX 5090 (simulated)", total_memory=32 * 2**30, major=12, minor=0)
    cuda.mem_get_info = lambda device=None: (31 * 2**30, 32 * 2**30)
    cuda.empty_cache = lambda: None
    cuda.init = lambda: None


def _display_error(report):
    """Every display the notebook makes raises: the run must end exactly as it would have."""

    def broken(*args, **kwargs):
        raise RuntimeError("display failed (injected by the test)")

    report.display = report.update_display = broken


def _broken_sampler(telemetry):
    """Every reading of the system metrics sampler fails (lib/telemetry.py): the run must end as it would have."""

    def broken(*args, **kwargs):
        raise RuntimeError("sensor unreadable (injected by the test)")

    telemetry.ProcessTree.read = telemetry.SystemSampler._system = broken


def _kernel_stuck_in_preflight(preflight, *, dies: bool):
    """The kernel, in pre-flight's cell, dies at once (killed by the system for memory, a crash in native code) or
    blocks for good where Ctrl-C cannot reach it (a driver call, a network drive). Only the kernel runs pre-flight."""

    def stuck(*args, **kwargs):
        if dies:
            os._exit(137)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        time.sleep(3600)

    preflight.run_preflight = stuck


def _signal_after_the_facts(run_module):
    """SIGTERM to the launcher (the kernel's parent) once M44.3 has written the facts, while its cell still runs: the
    moment a late Ctrl-C would interrupt the cells that show the outcome. Only the kernel imports lib.run."""
    original = run_module.Run.consolidate

    def consolidate(self):
        facts = original(self)
        os.kill(os.getppid(), signal.SIGTERM)
        time.sleep(2)  # an interrupt the launcher forwarded would land here, in the cell
        return facts

    run_module.Run.consolidate = consolidate


def _full_disk(*, even_for_the_failure: bool):
    """The disk fills once the notebook is done: the launcher cannot write run.html (and, if asked, nothing else).

    Only lib.execute imports nbconvert (the kernel and the worker never do), so the fault stays in the launcher.
    """

    def patch(exporters):
        def from_filename(self, *args, **kwargs):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "run.html")

        exporters.HTMLExporter.from_filename = from_filename
        if even_for_the_failure:
            import lib.evidence

            def write_text(path, text):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

            lib.evidence.write_text = write_text

    _on_import("nbconvert.exporters", patch)


def _held_files(*, for_good: str | None):
    """Another program holds evidence files for a moment (Windows' antivirus, indexer, OneDrive, an editor): an
    atomic write's os.replace fails with PermissionError, as on Windows (WinError 32). Every third attempt to replace
    an evidence file fails, so a write succeeds at its retry; with `for_good`, that file fails every attempt. With
    M44_FAULT_MARK set, each refusal appends the file's name to that file (from every process)."""
    import re

    original, calls = os.replace, [0]
    mark = Path(os.environ.get("M44_FAULT_MARK", ""))

    def replace(source, target, *args, **kwargs):
        name = Path(target).name
        if re.fullmatch(r"\..+\.\d+\.tmp", Path(source).name):  # lib.evidence's atomic writes only
            calls[0] += 1
            if name == for_good or (for_good is None and calls[0] % 3 == 0):
                if mark.name:
                    with mark.open("a", encoding="utf-8") as f:
                        f.write(name + "\n")
                raise PermissionError(13, "The process cannot access the file because it is being used by another "
                                          "process (injected by the test)", str(target))
        return original(source, target, *args, **kwargs)

    os.replace = replace


# What a model can generate that breaks a line in some reader or does not show: carriage return, vertical tab, the
# file, group and record separators, next line, the line and paragraph separators, NUL, a replacement character
# (what an unpaired surrogate decodes to), a right-to-left override, an escape sequence.
STRANGE = ["\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\x00", "\ufffd", "\u202e",
           "\x1b[31m", "\r\n", "`", "|"]


def _strange_generations(generation):
    """Every generated output holds one of STRANGE (item n the n-th, cycling), in its reasoning and in its answer;
    one output is as long as max_new_tokens allows in characters. Patched where generation runs: the worker."""
    original = generation.generate_greedy

    def generate_greedy(model, tokenizer, prompts, batch_size, max_new_tokens, label="generate"):
        records = original(model, tokenizer, prompts, batch_size, max_new_tokens, label=label)
        for n, record in enumerate(records):
            char = STRANGE[n % len(STRANGE)]
            record["output"] = f"<reasoning>4{char}2 is{char}</reasoning>\n<answer>4{char}2</answer>"
        records[-1]["output"] = ("x\r" * max_new_tokens)[:max_new_tokens * 4]
        return records

    generation.generate_greedy = generate_greedy


def _writer_disagrees(evaluation):
    """lib.evaluation writes an evaluation summary the verifier would not render: a fault of the checker's kind (the
    writer and the checker out of step), the run's work done. The worker runs as __main__, so the hook is on the
    module it writes through; the checker renders with lib.results's own function, untouched."""
    original = evaluation.render_evaluation_summary
    evaluation.render_evaluation_summary = lambda metrics, items: original(metrics, items).replace(
        "greedy decoding", "greedy\rdecoding", 1)


FAULTS = {
    "oom": lambda: _at_step(_oom),
    "sigkill": lambda: _at_step(lambda trainer: os.kill(os.getpid(), signal.SIGKILL)),
    "sigterm": lambda: _at_step(lambda trainer: os.kill(os.getpid(), signal.SIGTERM)),
    "sigint": lambda: _at_step(lambda trainer: os.kill(os.getpid(), signal.SIGINT)),
    # The parent of a rank is torchrun: SIGTERM to it is what `kill`, a scheduler or the notebook's
    # interrupt sends, and torchrun passes it on to every rank. Once: the rank trains on until it arrives.
    "sigterm_torchrun": lambda: _at_step(_once(lambda trainer: os.kill(os.getppid(), signal.SIGTERM))),
    "nan_loss": lambda: _on_import("transformers.trainer", _nan_loss),
    "disk_full": lambda: _on_import("safetensors.torch", _disk_full),
    "generation_error": lambda: _on_import("transformers.generation.utils", _generation_error),
    "unsupported_gpu": lambda: _on_import("torch", _unsupported_gpu),
    "display_error": lambda: _on_import("lib.report", _display_error),
    "kernel_dies": lambda: _on_import("lib.preflight", lambda m: _kernel_stuck_in_preflight(m, dies=True)),
    "kernel_hangs": lambda: _on_import("lib.preflight", lambda m: _kernel_stuck_in_preflight(m, dies=False)),
    "signal_after_the_facts": lambda: _on_import("lib.run", _signal_after_the_facts),
    "sampler_error": lambda: _on_import("lib.telemetry", _broken_sampler),
    "report_disk_full": lambda: _full_disk(even_for_the_failure=False),
    "disk_full_at_the_end": lambda: _full_disk(even_for_the_failure=True),
    "held_files": lambda: _held_files(for_good=None),
    "strange_generations": lambda: _on_import("lib.generation", _strange_generations),
    "writer_disagrees": lambda: _on_import("lib.evaluation", _writer_disagrees),
    "held_results": lambda: _held_files(for_good="evaluation_results.json"),
}

if FAULT and ON_THIS_RANK:
    for name in FAULT.split(","):
        FAULTS[name]()
