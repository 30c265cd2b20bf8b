"""A stand-in for nvidia-ml-py's `pynvml`, for the tests: one busy GPU on a machine that has none.

Put this folder first on the import path (PYTHONPATH, or sys.path in the test) and lib/telemetry.py samples a
"GPU" whose readings the tests know: utilisation alternating 80 and 100%, power rising 10 W a reading from 200 W,
70 °C, 12 GiB of 32 GiB used, and the software power cap always active (throttled) beside the GPU idle bit.
Only the calls lib/telemetry.py makes are here.
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace

GIB = 2**30
NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_SM = 1
nvmlClocksEventReasonGpuIdle = 0x1
nvmlClocksEventReasonApplicationsClocksSetting = 0x2
nvmlClocksEventReasonSwPowerCap = 0x4
nvmlClocksEventReasonHwSlowdown = 0x8
nvmlClocksEventReasonSyncBoost = 0x10
nvmlClocksEventReasonSwThermalSlowdown = 0x20
nvmlClocksEventReasonHwThermalSlowdown = 0x40
nvmlClocksEventReasonHwPowerBrakeSlowdown = 0x80
nvmlClocksEventReasonDisplayClockSetting = 0x100
NAME = "NVIDIA GeForce RTX 5090 (fake NVML)"
UUID = "GPU-00000000-0000-0000-0000-000000005090"


class NVMLError(Exception):
    pass


class NVMLError_NotSupported(NVMLError):
    pass


_power = itertools.count(200_000, 10_000)  # milliwatts, 10 W more at every reading
_utilization = itertools.cycle((80, 100))


def nvmlInit():
    pass


def nvmlShutdown():
    pass


def nvmlSystemGetDriverVersion():
    return "580.00.00 (fake)"


def nvmlSystemGetNVMLVersion():
    return "13.580.00 (fake)"


def nvmlDeviceGetCount():
    return 1


def nvmlDeviceGetHandleByIndex(index):
    if index != 0:
        raise NVMLError("Invalid Argument")
    return "handle-0"


def nvmlDeviceGetHandleByUUID(uuid):
    if uuid != UUID:
        raise NVMLError("Not Found")
    return "handle-0"


def nvmlDeviceGetName(handle):
    return NAME


def nvmlDeviceGetUUID(handle):
    return UUID


def nvmlDeviceGetMemoryInfo(handle):
    return SimpleNamespace(total=32 * GIB, used=12 * GIB, free=20 * GIB)


def nvmlDeviceGetEnforcedPowerLimit(handle):
    return 575_000


def nvmlDeviceGetUtilizationRates(handle):
    return SimpleNamespace(gpu=next(_utilization), memory=40)


def nvmlDeviceGetPowerUsage(handle):
    return next(_power)


def nvmlDeviceGetTemperature(handle, sensor):
    return 70


def nvmlDeviceGetClockInfo(handle, clock):
    return 2400


def nvmlDeviceGetCurrentClocksEventReasons(handle):
    return nvmlClocksEventReasonSwPowerCap | nvmlClocksEventReasonGpuIdle
