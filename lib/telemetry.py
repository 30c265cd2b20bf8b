"""The machine while a phase runs: a thread in the notebook's kernel samples it into system_metrics.jsonl.

Every `telemetry_interval_s` seconds one JSON line, appended and flushed at once, tagged with the phase: through
NVML (the nvidia-ml-py package) each GPU the run uses (utilisation, memory, power, temperature, SM clock, clock
event reasons); through psutil the processes the kernel started (the training or evaluation worker, torchrun and its
ranks), the kernel itself, the system's memory in use and the disk space left on the run folder's volume. The
sampler lives in the kernel, outside the workers, so a killed worker leaves the timeline up to the kill. It never
fails the run: an error while sampling is recorded in the file (each distinct message once) and counted, and an
error starting or stopping it is printed; the phase goes on either way. docs/TELEMETRY.md describes the fields.

    @sample_system_metrics("training")       # a phase function fn(cfg, run_dir, ...): sampled while it runs
    def train(cfg, run_dir, prepared): ...

    with SystemSampler(path, "ours", interval_s=1.0, device="cuda"):   # anything else (bench/gpu_check.py)
        ...
"""

from __future__ import annotations

import functools
import json
import threading
import time
from pathlib import Path

import psutil

from lib.contract import PHASE_ORDER, TELEMETRY, TIMELINE_PLOT
from lib.evidence import write_text
from lib.nvml import clock_event_reasons, nvml_status, used_gpus
from lib.telemetry_summary import parse_telemetry

STOP_TIMEOUT_S = 10.0  # a sample stuck in a driver call is abandoned after this long: the phase does not wait on it


def sample_system_metrics(phase: str):
    """Decorate a phase function `fn(cfg, run_dir, ...)`: the machine is sampled into the run folder while it runs,
    and the timeline (system_metrics.png) is drawn again from the whole file when it ends, however it ends."""

    def decorate(fn):
        @functools.wraps(fn)
        def sampled(cfg, run_dir: Path, *args, **kwargs):
            try:
                with SystemSampler(run_dir / TELEMETRY, phase, cfg.telemetry_interval_s, cfg.device,
                                   cfg.num_processes):
                    return fn(cfg, run_dir, *args, **kwargs)
            finally:
                draw_timeline(run_dir)

        return sampled

    return decorate


def draw_timeline(run_dir: Path) -> None:
    """system_metrics.png from system_metrics.jsonl; not a required file, so an error is printed and the run goes on."""
    from lib.plots import plot_timeline  # here: matplotlib would cost every worker's start (lib.evaluation imports this)

    path = run_dir / TELEMETRY
    try:
        if path.is_file():
            records, _ = parse_telemetry(path.read_text(encoding="utf-8", errors="replace"))
            plot_timeline(records, run_dir / TIMELINE_PLOT)
    except Exception as exc:
        print(f"system metrics: timeline not drawn ({_said(exc)}); the run goes on", flush=True)


class SystemSampler:
    """Samples the machine into `path` from a thread, between `start` and `stop` (or as a context manager).

    Neither `start` nor `stop` raises: what goes wrong is recorded in the file, or printed when the file
    itself cannot be written. `device` and `num_processes` say which GPUs the run uses (cuda:0 to cuda:N-1).
    """

    def __init__(self, path: Path, phase: str, interval_s: float, device: str = "cpu", num_processes: int = 1):
        self.path, self.phase, self.interval_s = Path(path), phase, interval_s
        self.device, self.num_processes = device, num_processes
        self.samples = self.errors = 0
        self._seen_errors: dict[str, None] = {}  # the distinct messages, in the order they came
        self._lock = threading.Lock()  # one writer at a time; nothing is written once `stop` closed the file
        self._file = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml = None
        self._gpus: list[tuple[int, object]] = []  # (CUDA index, NVML handle)
        self._processes: ProcessTree | None = None
        self._cpu_s: float | None = None  # the sampler thread's own CPU time: its cost, stated in the stop record

    def __enter__(self) -> SystemSampler:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> None:
        try:
            drop_samples_from(self.path, self.phase)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Appended a line at a time and flushed: whatever ends the kernel, every line written is whole.
            self._file = self.path.open("a", encoding="utf-8", newline="\n")
            self._processes = ProcessTree()
            self._nvml, gpu = nvml_status()
            devices = self._open_gpus() if self._nvml is not None and self.device == "cuda" else []
            if self._nvml is not None and self.device != "cuda":
                gpu += f"; not used by this run (device: {self.device})"
            self._write({"kind": "start", "phase": self.phase, "time": _now(), "interval_s": self.interval_s,
                         "gpu": gpu, "cpu_count": psutil.cpu_count(),
                         "memory_total_bytes": psutil.virtual_memory().total, "gpus": devices})
            self._thread = threading.Thread(target=self._run, name=f"system-metrics-{self.phase}", daemon=True)
            self._thread.start()
        except Exception as exc:
            print(f"system metrics: not sampled in {self.phase} ({_said(exc)}); the run goes on",
                  flush=True)
            self._close()

    def stop(self) -> None:
        try:
            self._stopping.set()
            if self._thread is not None:
                self._thread.join(STOP_TIMEOUT_S)
                if self._thread.is_alive():
                    self._error(f"the sampler did not stop within {STOP_TIMEOUT_S:g} s (a reading hung); abandoned")
            if self._file is not None:
                self._write({"kind": "stop", "phase": self.phase, "time": _now(), "samples": self.samples,
                             "errors": self.errors, "sampler_cpu_s": self._cpu_s})
            if self.errors:
                print(f"system metrics: {self.errors} sampler error(s) in {self.phase}, recorded in {self.path.name} "
                      f"(first: {next(iter(self._seen_errors))}); the run goes on", flush=True)
        except Exception as exc:
            print(f"system metrics: stopping failed in {self.phase} ({_said(exc)}); the run goes on",
                  flush=True)
        finally:
            self._close()

    # --- the thread --------------------------------------------------------------------------------

    def _run(self) -> None:
        started = time.thread_time()
        due = time.monotonic()
        while True:
            self._sample()
            due += self.interval_s
            wait = due - time.monotonic()
            if wait < 0:  # behind (a slow reading, a busy machine): go on from now, no burst of samples to catch up
                due, wait = time.monotonic(), 0.0
            if self._stopping.wait(wait):
                break
        self._sample()  # the end of the phase: the last state, and the end of the last segment
        self._cpu_s = round(time.thread_time() - started, 4)

    def _sample(self) -> None:
        record = {"kind": "sample", "phase": self.phase, "time": _now()}
        for part, read in (("processes", self._processes.read), ("system", self._system), ("GPUs", self._read_gpus)):
            try:
                record.update(read())
            except Exception as exc:  # one part failed: the others are still recorded
                self._error(f"reading the {part}: {_said(exc)}")
        self.samples += 1
        self._write(record)

    def _system(self) -> dict:
        memory = psutil.virtual_memory()
        return {"memory_used_bytes": memory.total - memory.available,  # what psutil's docs call memory in use
                "disk_free_bytes": psutil.disk_usage(str(self.path.parent)).free}

    def _read_gpus(self) -> dict:
        if not self._gpus:
            return {}
        return {"gpus": [self._read_gpu(index, handle) for index, handle in self._gpus]}

    def _read_gpu(self, index: int, handle) -> dict:
        nvml = self._nvml
        fields = {
            "utilization_percent": lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu,
            "memory_used_bytes": lambda: nvml.nvmlDeviceGetMemoryInfo(handle).used,
            "power_w": lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000,  # milliwatts
            "temperature_c": lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU),
            "sm_clock_mhz": lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM),
            "throttle_reasons": lambda: clock_event_reasons(nvml, nvml.nvmlDeviceGetCurrentClocksEventReasons(handle)),
        }
        reading: dict = {"index": index}
        for key, read in fields.items():
            try:
                reading[key] = read()
            except nvml.NVMLError_NotSupported:  # this GPU does not report it (some boards lack power readings)
                reading[key] = None
            except nvml.NVMLError as exc:
                reading[key] = None
                self._error(f"GPU {index} {key}: {exc}")
        return reading

    # --- the file ----------------------------------------------------------------------------------

    def _open_gpus(self) -> list[dict]:
        """The GPUs the run uses, described for the start record; on an error it is recorded and no GPU sampled."""
        try:
            self._gpus = used_gpus(self._nvml, self.num_processes)
            return [self._describe_gpu(index, handle) for index, handle in self._gpus]
        except Exception as exc:
            self._gpus = []
            self._error(f"finding the run's GPUs: {_said(exc)}")
            return []

    def _describe_gpu(self, index: int, handle) -> dict:
        nvml = self._nvml
        try:
            power_limit = nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000  # milliwatts
        except nvml.NVMLError:  # not every board reports one
            power_limit = None
        return {"index": index, "name": nvml.nvmlDeviceGetName(handle), "uuid": nvml.nvmlDeviceGetUUID(handle),
                "memory_total_bytes": nvml.nvmlDeviceGetMemoryInfo(handle).total, "power_limit_w": power_limit}

    def _error(self, message: str) -> None:
        """Counted every time; written once per distinct message, so a reading failing at every sample fills no disk."""
        self.errors += 1
        if message not in self._seen_errors:
            self._seen_errors[message] = None
            self._write({"kind": "error", "phase": self.phase, "time": _now(), "message": message})

    def _write(self, record: dict) -> None:
        with self._lock:
            if self._file is None:
                return
            try:
                self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
                self._file.flush()
            except OSError as exc:  # the disk is full or gone: stop sampling, keep the run
                print(f"system metrics: cannot write {self.path.name} ({exc}); sampling stopped, the run goes on",
                      flush=True)
                self._stopping.set()
                self._file = None

    def _close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # the readings are written; a failed shutdown changes nothing for the run
                pass
            self._nvml = None


class ProcessTree:
    """CPU share and resident memory of the kernel (the process that samples) and of every process it started.

    CPU shares come from differences of each process's CPU time, by hand: psutil's cpu_percent() reports 0 on
    the first call for each process, which would hide a worker's first seconds. A process first seen started
    since the last sample (it is a child: it would have been seen otherwise), so all its CPU time is new.
    """

    def __init__(self) -> None:
        self.kernel = psutil.Process()
        self.cpu_s: dict[tuple[int, float], float] = {}  # (pid, create time) -> its CPU seconds at the last sample
        self.last: float | None = None

    def read(self) -> dict:
        now = time.monotonic()
        seen: dict[tuple[int, float], float] = {}
        kernel = self._measure(self.kernel, seen)
        workers = [m for m in (self._measure(p, seen) for p in self.kernel.children(recursive=True)) if m]
        elapsed = None if self.last is None else now - self.last
        self.cpu_s, self.last = seen, now

        def share(cpu_s: float) -> float | None:
            return round(100 * cpu_s / elapsed, 1) if elapsed else None  # none for the first sample: no interval yet

        return {"workers": len(workers), "workers_cpu_percent": share(sum(cpu for cpu, _ in workers)),
                "workers_rss_bytes": sum(rss for _, rss in workers),
                "kernel_cpu_percent": share(kernel[0]) if kernel else None,
                "kernel_rss_bytes": kernel[1] if kernel else None}

    def _measure(self, process: psutil.Process, seen: dict) -> tuple[float, int] | None:
        """(CPU seconds since the last sample, resident bytes), or None for a process that just ended."""
        try:
            with process.oneshot():
                times, rss = process.cpu_times(), process.memory_info().rss
                key = (process.pid, process.create_time())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        seen[key] = times.user + times.system
        return seen[key] - self.cpu_s.get(key, 0.0), rss


def drop_samples_from(path: Path, phase: str) -> None:
    """A phase that runs again (an interactive run) replaces its own records and those of every later phase."""
    if phase not in PHASE_ORDER or not path.is_file():
        return
    later = set(PHASE_ORDER[PHASE_ORDER.index(phase):])
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if _phase_of(line) not in later]
    if len(kept) < len(lines):
        write_text(path, "".join(kept))


def _phase_of(line: str) -> str | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record.get("phase") if isinstance(record, dict) else None


def _said(exc: BaseException) -> str:
    """What an error says, for people; its kind only when it says nothing (a bare KeyError)."""
    return str(exc) or type(exc).__name__


def _now() -> float:
    return round(time.time(), 3)
