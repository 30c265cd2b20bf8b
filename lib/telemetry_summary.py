"""The facts of system_metrics.jsonl (lib/telemetry.py writes it): pure and torch-free, so the verifier recomputes them.

Consolidation puts `load_telemetry(run_dir)` into m44_summary.json as `telemetry`; lib.verify computes it again from
the file and compares. The file's fields are described in docs/TELEMETRY.md. The facts:

    samples, unreadable_lines   samples in the file; lines that are not a JSON object (a line torn by a killed kernel)
    errors                      [{phase, message}]: each distinct error the sampler recorded (it never stops the run)
    energy_kwh                  all GPUs over all phases, or null without GPU power readings
    phases                      per phase, in order: {phase, interval_s, gpu (what NVML said), cpu_count,
                                duration_s, samples, stopped, sampler_cpu_s, error_count, workers_peak,
                                workers_cpu_percent_mean, workers_rss_peak_bytes, kernel_cpu_percent_mean,
                                kernel_rss_peak_bytes, memory_used_peak_bytes, disk_free_min_bytes,
                                gpus: [{index, name, utilization_mean, utilization_peak, memory_used_peak_bytes,
                                        temperature_peak_c, power_peak_w, energy_kwh, throttled_s, throttled_by}]}

Time between two consecutive samples of a phase is a segment: its energy is the mean of the two power readings
times its length (the trapezoid rule), and it counts as throttled when the later sample names a throttling reason.
CPU shares are in percent of one core (100 = one core busy), as psutil and `top` give them.
"""

from __future__ import annotations

import json
from pathlib import Path

from lib.contract import TELEMETRY

# NVML's clock event reasons that slow the GPU below what the work asks for; the others (idle, an application or
# display clock setting, sync boost between GPUs) are recorded but are not throttling.
THROTTLING = ("sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown")
JOULES_PER_KWH = 3.6e6


def load_telemetry(run_dir: Path) -> dict | None:
    """The facts of the run folder's system_metrics.jsonl; None when the run has none (no phase sampled)."""
    path = run_dir / TELEMETRY
    if not path.is_file():
        return None
    # Bytes decoded as the verifier reads every file: a changed byte is the manifest check's to name.
    records, unreadable = parse_telemetry(path.read_bytes().decode("utf-8", errors="replace"))
    return summarize_telemetry(records, unreadable)


def parse_telemetry(text: str) -> tuple[list[dict], int]:
    """The JSON objects of the file, one per line, and how many lines were not one."""
    records, unreadable = [], 0
    for line in text.split("\n"):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            unreadable += 1
    return records, unreadable


def summarize_telemetry(records: list[dict], unreadable: int = 0) -> dict:
    """The facts above, from the file's records."""
    phases = list(dict.fromkeys(r["phase"] for r in records if isinstance(r.get("phase"), str)))
    facts = [phase_facts(name, [r for r in records if r.get("phase") == name]) for name in phases]
    energies = [gpu["energy_kwh"] for phase in facts for gpu in phase["gpus"] if gpu["energy_kwh"] is not None]
    return {
        "samples": sum(phase["samples"] for phase in facts),
        "unreadable_lines": unreadable,
        "errors": [{"phase": r.get("phase"), "message": r.get("message")} for r in records if r.get("kind") == "error"],
        "energy_kwh": round(sum(energies), 6) if energies else None,
        "phases": facts,
    }


def phase_facts(name: str, records: list[dict]) -> dict:
    """One phase's facts from its records (start, samples, errors, stop)."""
    start = next((r for r in records if r.get("kind") == "start"), {})
    stop = next((r for r in reversed(records) if r.get("kind") == "stop"), None)
    samples = sorted((r for r in records if r.get("kind") == "sample" and _number(r.get("time"))),
                     key=lambda r: r["time"])
    times = _numbers([start.get("time"), *(s["time"] for s in samples), (stop or {}).get("time")])
    working = [s for s in samples if _number(s.get("workers")) and s["workers"] > 0]
    return {
        "phase": name,
        "interval_s": start.get("interval_s"),
        "gpu": start.get("gpu"),
        "cpu_count": start.get("cpu_count"),
        "duration_s": round(max(times) - min(times), 1) if times else 0.0,
        "samples": len(samples),
        "stopped": stop is not None,  # false: the kernel itself ended mid-phase
        "sampler_cpu_s": (stop or {}).get("sampler_cpu_s"),
        "error_count": (stop or {}).get("errors", sum(r.get("kind") == "error" for r in records)),
        "workers_peak": max(_numbers(s.get("workers") for s in samples), default=0),
        # While a worker ran: before it starts and after it ends the workers' share is no share of their work.
        "workers_cpu_percent_mean": _mean(s.get("workers_cpu_percent") for s in working),
        "workers_rss_peak_bytes": _peak(s.get("workers_rss_bytes") for s in samples),
        "kernel_cpu_percent_mean": _mean(s.get("kernel_cpu_percent") for s in samples),
        "kernel_rss_peak_bytes": _peak(s.get("kernel_rss_bytes") for s in samples),
        "memory_used_peak_bytes": _peak(s.get("memory_used_bytes") for s in samples),
        "disk_free_min_bytes": min(_numbers(s.get("disk_free_bytes") for s in samples), default=None),
        "gpus": [gpu_facts(device, samples) for device in start.get("gpus") or [] if isinstance(device, dict)],
    }


def gpu_facts(device: dict, samples: list[dict]) -> dict:
    """One GPU over one phase: utilisation, memory, temperature and power, energy, throttling."""
    index = device.get("index")
    readings = [(s["time"], _reading(s, index)) for s in samples]
    energy_j, throttled_s, throttled_by = 0.0, 0.0, {}
    powered = False
    for (t0, before), (t1, after) in zip(readings, readings[1:]):
        dt = t1 - t0
        if _number(before.get("power_w")) and _number(after.get("power_w")):
            energy_j += (before["power_w"] + after["power_w"]) / 2 * dt
            powered = True
        reasons = [r for r in after.get("throttle_reasons") or [] if r in THROTTLING]
        if reasons:
            throttled_s += dt
        for reason in reasons:
            throttled_by[reason] = throttled_by.get(reason, 0.0) + dt
    values = [reading for _, reading in readings]
    return {
        "index": index,
        "name": device.get("name"),
        "utilization_mean": _mean(v.get("utilization_percent") for v in values),
        "utilization_peak": _peak(v.get("utilization_percent") for v in values),
        "memory_used_peak_bytes": _peak(v.get("memory_used_bytes") for v in values),
        "temperature_peak_c": _peak(v.get("temperature_c") for v in values),
        "power_peak_w": _peak(v.get("power_w") for v in values),
        "energy_kwh": round(energy_j / JOULES_PER_KWH, 6) if powered else None,
        "throttled_s": round(throttled_s, 1),
        "throttled_by": {reason: round(seconds, 1) for reason, seconds in sorted(throttled_by.items())},
    }


def _reading(sample: dict, index: object) -> dict:
    return next((g for g in sample.get("gpus") or [] if isinstance(g, dict) and g.get("index") == index), {})


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numbers(values) -> list[float]:
    return [v for v in values if _number(v)]


def _mean(values) -> float | None:
    found = _numbers(values)
    return round(sum(found) / len(found), 1) if found else None


def _peak(values) -> float | None:
    return max(_numbers(values), default=None)
