"""NVML, the NVIDIA driver's management library, through nvidia-ml-py (`pynvml`): what it says on this machine,
the GPUs a run uses, and why their clocks are what they are. The system metrics sampler (lib/telemetry.py) reads
the GPUs through it; the GPU snapshot of pre-flight (lib/snapshot.py) states what it says."""

from __future__ import annotations

import os

# NVML's clock event reasons (nvmlClocksEventReason*), by the names the file uses.
CLOCK_EVENT_REASONS = {
    "gpu_idle": "nvmlClocksEventReasonGpuIdle",
    "applications_clocks_setting": "nvmlClocksEventReasonApplicationsClocksSetting",
    "sw_power_cap": "nvmlClocksEventReasonSwPowerCap",
    "hw_slowdown": "nvmlClocksEventReasonHwSlowdown",
    "sync_boost": "nvmlClocksEventReasonSyncBoost",
    "sw_thermal_slowdown": "nvmlClocksEventReasonSwThermalSlowdown",
    "hw_thermal_slowdown": "nvmlClocksEventReasonHwThermalSlowdown",
    "hw_power_brake_slowdown": "nvmlClocksEventReasonHwPowerBrakeSlowdown",
    "display_clock_setting": "nvmlClocksEventReasonDisplayClockSetting",
}


def nvml_status():
    """(pynvml, initialised) and what NVML says ('NVIDIA driver 580.65.06, 1 GPU(s) (NVML 13.580.65.06)'); or
    (None, 'no NVIDIA GPU (why)'). The caller shuts NVML down again."""
    try:
        import pynvml  # nvidia-ml-py: imported here, so that a machine without it still runs
    except ImportError:
        return None, "no NVIDIA GPU data: the nvidia-ml-py package is missing (pip install -r requirements.txt)"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return None, f"no NVIDIA GPU (NVML: {exc})"
    try:
        driver, count, version = (pynvml.nvmlSystemGetDriverVersion(), pynvml.nvmlDeviceGetCount(),
                                  pynvml.nvmlSystemGetNVMLVersion())
    except pynvml.NVMLError as exc:
        pynvml.nvmlShutdown()
        return None, f"no NVIDIA GPU (NVML: {exc})"
    if count == 0:
        pynvml.nvmlShutdown()
        return None, f"no NVIDIA GPU (NVIDIA driver {driver} lists none)"
    return pynvml, f"NVIDIA driver {driver}, {count} GPU(s) (NVML {version})"


def describe_nvml() -> str:
    """What NVML says on this machine, for the GPU snapshot: the driver and its GPUs, or 'no NVIDIA GPU (why)'."""
    nvml, description = nvml_status()
    if nvml is not None:
        nvml.nvmlShutdown()
    return description


def used_gpus(nvml, num_processes: int) -> list[tuple[int, object]]:
    """(CUDA index, NVML handle) of cuda:0 to cuda:N-1: CUDA_VISIBLE_DEVICES's entries (indices or UUIDs) in order,
    else NVML's own order. CUDA orders unlisted devices fastest first, NVML by PCI bus: the same for one GPU or for
    identical ones; with mixed GPUs set CUDA_DEVICE_ORDER=PCI_BUS_ID (docs/TELEMETRY.md)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    entries = ([e.strip() for e in visible.split(",")] if visible is not None
               else [str(i) for i in range(nvml.nvmlDeviceGetCount())])
    handles = []
    for index, entry in enumerate(entries[:num_processes]):
        handles.append((index, nvml.nvmlDeviceGetHandleByIndex(int(entry)) if entry.isdigit()
                        else nvml.nvmlDeviceGetHandleByUUID(entry)))
    return handles


def clock_event_reasons(nvml, mask: int) -> list[str]:
    """NVML's bit mask of why the clocks are what they are, as names (lib.telemetry_summary.THROTTLING: which
    of them throttle)."""
    return [name for name, constant in CLOCK_EVENT_REASONS.items() if mask & getattr(nvml, constant)]
