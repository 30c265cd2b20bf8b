"""The portable CPU numerics (cpu_numerics: portable, lib/launcher.py PORTABLE_CPU) on other machines, stood in for
on this one: what differs between an AMX Xeon, an AVX2 EPYC and an older CPU is the instruction set MKL and oneDNN
pick at run time, and capping it must not change the arithmetic a demo's worker does.

Not vacuous: with MKL's automatic path (MKL_CBWR=AUTO) the same caps give three different fingerprints on a Xeon
with AMX (docs/ARCHITECTURE.md, "The same numbers on every machine"); the README's fingerprint test then names a
machine whose arithmetic still differs.
"""

from __future__ import annotations

import pytest

from tools.readme_figures import numerics_fingerprint

# What MKL_ENABLE_INSTRUCTIONS and ONEDNN_MAX_CPU_ISA make of this machine: the most another x86-64 CPU could offer.
OTHER_CPUS = {
    "AVX2 (an AMD EPYC, Intel before AVX-512)": {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "SSE4.2 (MKL's and oneDNN's oldest x86-64 paths)": {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
                                                        "ONEDNN_MAX_CPU_ISA": "SSE41"},
}


@pytest.fixture(scope="module")
def this_machine() -> str:
    return numerics_fingerprint()


@pytest.mark.parametrize("cpu", list(OTHER_CPUS))
def test_the_portable_arithmetic_is_the_same_whatever_instruction_set_mkl_and_onednn_pick(this_machine, cpu):
    assert numerics_fingerprint(OTHER_CPUS[cpu]) == this_machine
