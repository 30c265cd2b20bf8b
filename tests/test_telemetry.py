"""The system metrics timeline (lib/telemetry.py) and its facts (lib/telemetry_summary.py): what is sampled, how the
facts follow from the samples, and that nothing the sampler does or suffers can fail a run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from lib import telemetry
from lib.config import REPO_ROOT
from lib.run import Run, RunFailed
from lib.summary import render_summary, telemetry_line, telemetry_section
from lib.nvml import describe_nvml
from lib.telemetry import SystemSampler, sample_system_metrics
from lib.telemetry_summary import load_telemetry, parse_telemetry, summarize_telemetry
from lib.verify import verify
from tests.conftest import SHORT_RUN, papermill_command, profile, with_fault

FAKE_NVML = REPO_ROOT / "tests" / "fake_nvml"
BUSY_CHILD = "import time\nt = time.time()\nwhile time.time() - t < {seconds}: pass\n"
GIB = 2**30


def records_of(path: Path) -> list[dict]:
    """Every line of the file as JSON: a line that is not raises here."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def sample_a_busy_child(path: Path, phase: str = "training", interval_s: float = 0.1, seconds: float = 1.0,
                        device: str = "cpu", own_process: bool = True) -> None:
    """A sampler around a child process that keeps one core busy for `seconds`, as a worker would. In a process of
    its own, as the kernel is: the test process may have children of its own (another test's browser) that the
    sampler would count as workers. sys.path goes along (a test's fake pynvml). own_process=False: in this process,
    for a test that patches the sampler here."""
    if not own_process:
        with SystemSampler(path, phase, interval_s, device):
            subprocess.run([sys.executable, "-c", BUSY_CHILD.format(seconds=seconds)], check=True)
            time.sleep(3 * interval_s)
        return
    script = (f"import subprocess, sys, time\nfrom pathlib import Path\nfrom lib.telemetry import SystemSampler\n"
              f"with SystemSampler(Path({str(path)!r}), {phase!r}, {interval_s!r}, {device!r}):\n"
              f"    subprocess.run([sys.executable, '-c', {BUSY_CHILD.format(seconds=seconds)!r}], check=True)\n"
              f"    time.sleep({3 * interval_s!r})  # samples after the worker ended\n")
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO_ROOT,
                   env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})


@pytest.fixture
def fake_nvml(monkeypatch):
    """tests/fake_nvml/pynvml.py in place of nvidia-ml-py: one GPU whose readings the test knows."""
    monkeypatch.syspath_prepend(str(FAKE_NVML))
    monkeypatch.delitem(sys.modules, "pynvml", raising=False)
    yield
    sys.modules.pop("pynvml", None)  # the next test imports whichever pynvml its path holds


def test_the_sampler_appends_a_line_per_sample_tagged_with_the_phase(tmp_path):
    path = tmp_path / "system_metrics.jsonl"
    sample_a_busy_child(path)
    records = records_of(path)
    kinds = [r["kind"] for r in records]
    assert kinds[0] == "start" and kinds[-1] == "stop" and set(kinds[1:-1]) == {"sample"}, kinds
    assert {r["phase"] for r in records} == {"training"}
    samples = records[1:-1]
    assert records[-1]["samples"] == len(samples) and records[-1]["errors"] == 0
    assert records[-1]["sampler_cpu_s"] > 0  # its own cost, stated
    assert records[0]["interval_s"] == 0.1 and records[0]["cpu_count"] >= 1
    # The worker (a child of the sampling process) seen busy, then gone; the system's memory and disk beside it.
    busy = [s for s in samples if s["workers"] == 1 and s["workers_cpu_percent"]]
    assert busy and max(s["workers_cpu_percent"] for s in busy) > 20
    assert all(s["workers_rss_bytes"] > 0 for s in busy)
    assert samples[-1]["workers"] == 0 and samples[-1]["workers_rss_bytes"] == 0
    assert all(s["memory_used_bytes"] > 0 and s["disk_free_bytes"] > 0 and s["kernel_rss_bytes"] > 0 for s in samples)
    assert samples[0]["workers_cpu_percent"] is None  # no interval before the first sample: no share
    times = [s["time"] for s in samples]
    assert times == sorted(times) and len(samples) >= (times[-1] - times[0]) / 0.1 / 2  # busy 2-core machine


def test_the_facts_agree_with_the_samples(tmp_path):
    path = tmp_path / "system_metrics.jsonl"
    sample_a_busy_child(path)
    records = records_of(path)
    samples = [r for r in records if r["kind"] == "sample"]
    facts = load_telemetry(tmp_path)
    (phase,) = facts["phases"]
    working = [s["workers_cpu_percent"] for s in samples if s["workers"] and s["workers_cpu_percent"] is not None]
    kernel = [s["kernel_cpu_percent"] for s in samples if s["kernel_cpu_percent"] is not None]
    assert phase["workers_cpu_percent_mean"] == round(sum(working) / len(working), 1)
    assert phase["kernel_cpu_percent_mean"] == round(sum(kernel) / len(kernel), 1)
    assert phase["workers_rss_peak_bytes"] == max(s["workers_rss_bytes"] for s in samples)
    assert phase["memory_used_peak_bytes"] == max(s["memory_used_bytes"] for s in samples)
    assert phase["disk_free_min_bytes"] == min(s["disk_free_bytes"] for s in samples)
    assert phase["duration_s"] == round(records[-1]["time"] - records[0]["time"], 1)
    assert (phase["samples"], phase["workers_peak"], phase["stopped"]) == (len(samples), 1, True)
    assert facts["samples"] == len(samples) and facts["energy_kwh"] is None and facts["errors"] == []


@pytest.mark.skipif(not describe_nvml().startswith("no NVIDIA GPU"), reason="this machine has an NVIDIA GPU")
def test_without_an_nvidia_driver_the_gpu_columns_say_no_nvidia_gpu(tmp_path):
    path = tmp_path / "system_metrics.jsonl"
    sample_a_busy_child(path, seconds=0.2, device="cuda")
    start, *samples, stop = records_of(path)
    assert start["gpu"].startswith("no NVIDIA GPU (") and start["gpus"] == []
    assert not any("gpus" in s for s in samples) and stop["errors"] == 0
    line = telemetry_line(load_telemetry(tmp_path))
    assert line.startswith("training (") and " of one core (of " in line and line.endswith("; no GPU sampled")


def test_a_fake_nvml_shows_the_gpu_columns_and_the_energy_integrated_over_time(tmp_path, fake_nvml, monkeypatch):
    from tests.fake_nvml.pynvml import UUID

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", UUID)  # the run's cuda:0, named by its UUID
    assert describe_nvml() == "NVIDIA driver 580.00.00 (fake), 1 GPU(s) (NVML 13.580.00 (fake))"
    path = tmp_path / "system_metrics.jsonl"
    sample_a_busy_child(path, seconds=0.5, device="cuda")
    start, *samples, stop = records_of(path)
    assert start["gpus"] == [{"index": 0, "name": "NVIDIA GeForce RTX 5090 (fake NVML)", "uuid": UUID,
                              "memory_total_bytes": 32 * GIB, "power_limit_w": 575.0}]
    readings = [s["gpus"][0] for s in samples]
    assert readings[0] == {"index": 0, "utilization_percent": 80, "memory_used_bytes": 12 * GIB, "power_w": 200.0,
                           "temperature_c": 70, "sm_clock_mhz": 2400, "throttle_reasons": ["gpu_idle", "sw_power_cap"]}
    assert [r["power_w"] for r in readings] == [200.0 + 10 * i for i in range(len(readings))]
    # The energy by the trapezoid rule, computed here from the samples alone.
    times = [s["time"] for s in samples]
    joules = sum((a["power_w"] + b["power_w"]) / 2 * (t1 - t0)
                 for (t0, a), (t1, b) in zip(zip(times, readings), zip(times[1:], readings[1:])))
    (gpu,) = load_telemetry(tmp_path)["phases"][0]["gpus"]
    assert gpu["energy_kwh"] == round(joules / 3.6e6, 6) and gpu["energy_kwh"] > 0
    assert gpu["throttled_s"] == round(times[-1] - times[0], 1)  # the power cap at every sample; idle is no throttle
    assert gpu["throttled_by"] == {"sw_power_cap": gpu["throttled_s"]}
    utilizations = [r["utilization_percent"] for r in readings]
    assert gpu["utilization_mean"] == round(sum(utilizations) / len(utilizations), 1) and gpu["utilization_peak"] == 100
    assert (gpu["memory_used_peak_bytes"], gpu["temperature_peak_c"], gpu["power_peak_w"]) == (
        12 * GIB, 70, readings[-1]["power_w"])
    line = telemetry_line(load_telemetry(tmp_path))
    assert f"GPU 0 busy {gpu['utilization_mean']:.0f}% (peak 100%), peak 70 °C, {gpu['energy_kwh']:.3f} kWh, " \
           f"throttled {gpu['throttled_s']:.0f} s (sw_power_cap" in line and "no NVIDIA GPU" not in line


def test_a_gpu_the_run_does_not_use_is_not_sampled(tmp_path, fake_nvml, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # not a device of this (fake) machine: an error, not a crash
    path = tmp_path / "system_metrics.jsonl"
    sample_a_busy_child(path, seconds=0.1, device="cuda")
    errors = [r for r in records_of(path) if r["kind"] == "error"]
    assert [e["message"] for e in errors] == ["finding the run's GPUs: Invalid Argument"]
    sample_a_busy_child(tmp_path / "cpu.jsonl", seconds=0.1, device="cpu")
    start = records_of(tmp_path / "cpu.jsonl")[0]
    assert start["gpus"] == [] and start["gpu"].endswith("; not used by this run (device: cpu)")


def test_a_reading_that_fails_is_recorded_once_counted_always_and_the_rest_still_sampled(tmp_path, monkeypatch):
    def broken(self):
        raise RuntimeError("sensor unreadable")

    monkeypatch.setattr(telemetry.ProcessTree, "read", broken)
    path = tmp_path / "system_metrics.jsonl"
    sample_a_busy_child(path, seconds=0.3, own_process=False)
    records = records_of(path)
    errors = [r for r in records if r["kind"] == "error"]
    samples = [r for r in records if r["kind"] == "sample"]
    assert [e["message"] for e in errors] == ["reading the processes: sensor unreadable"]
    assert records[-1]["errors"] == len(samples) > 1
    assert all("memory_used_bytes" in s and "workers" not in s for s in samples)
    facts = load_telemetry(tmp_path)
    assert facts["errors"] == [{"phase": "training", "message": errors[0]["message"]}]
    assert facts["phases"][0]["error_count"] == len(samples)
    assert f"{len(samples)} sampler errors, recorded in system_metrics.jsonl (the run went on)" in telemetry_line(facts)


def cfg_for(interval_s: float = 0.1) -> SimpleNamespace:
    return SimpleNamespace(telemetry_interval_s=interval_s, device="cpu", num_processes=1)


def test_a_sampler_that_cannot_start_is_reported_and_the_phase_runs(tmp_path, monkeypatch, capsys):
    def refuse(self, *args, **kwargs):
        raise PermissionError("the folder is read-only")

    monkeypatch.setattr(Path, "open", refuse)

    @sample_system_metrics("training")
    def phase(cfg, run_dir):
        return "trained"

    assert phase(cfg_for(), tmp_path) == "trained"
    out = capsys.readouterr().out
    assert "system metrics: not sampled in training (the folder is read-only); the run goes on" in out


def test_the_decorated_phase_draws_the_timeline_and_a_phase_run_again_replaces_its_samples(tmp_path):
    @sample_system_metrics("training")
    def train(cfg, run_dir):
        time.sleep(0.3)

    @sample_system_metrics("evaluation")
    def evaluate(cfg, run_dir):
        time.sleep(0.3)

    train(cfg_for(), tmp_path)
    evaluate(cfg_for(), tmp_path)
    assert (tmp_path / "system_metrics.png").stat().st_size > 10_000
    first = records_of(tmp_path / "system_metrics.jsonl")
    evaluate(cfg_for(), tmp_path)  # an interactive run's evaluation cell, run again
    again = records_of(tmp_path / "system_metrics.jsonl")
    assert [r for r in again if r["phase"] == "training"] == [r for r in first if r["phase"] == "training"]
    assert [r["kind"] for r in again if r["phase"] == "evaluation"].count("start") == 1
    assert [r for r in again if r["phase"] == "evaluation"] != [r for r in first if r["phase"] == "evaluation"]


# --- the facts, from records written here ----------------------------------------------------------


def gpu_sample(t: float, power: float | None, utilization: int, reasons: list[str], phase: str = "training") -> dict:
    return {"kind": "sample", "phase": phase, "time": t, "workers": 1, "workers_cpu_percent": 100.0,
            "workers_rss_bytes": 2 * GIB, "gpus": [{"index": 0, "utilization_percent": utilization, "power_w": power,
                                                    "memory_used_bytes": GIB, "temperature_c": 60,
                                                    "throttle_reasons": reasons}]}


def test_energy_is_the_trapezoid_over_the_samples_and_throttling_is_counted_by_reason():
    start = {"kind": "start", "phase": "training", "time": 0.0, "interval_s": 2.0, "gpu": "NVIDIA driver 1",
             "cpu_count": 16, "gpus": [{"index": 0, "name": "GPU"}]}
    samples = [gpu_sample(0.0, 100.0, 0, []), gpu_sample(2.0, 300.0, 100, ["sw_power_cap"]),
               gpu_sample(4.0, None, 100, ["gpu_idle"]), gpu_sample(6.0, 300.0, 90, ["hw_slowdown", "sw_power_cap"])]
    facts = summarize_telemetry([start, *samples, {"kind": "stop", "phase": "training", "time": 6.5, "samples": 4,
                                                   "errors": 0, "sampler_cpu_s": 0.01}])
    (gpu,) = facts["phases"][0]["gpus"]
    # 0-2 s: (100 + 300) / 2 W for 2 s = 400 J; 2-4 s and 4-6 s: no power reading at 4 s, so no energy.
    assert gpu["energy_kwh"] == round(400 / 3.6e6, 6) == facts["energy_kwh"]
    assert gpu["throttled_s"] == 4.0 and gpu["throttled_by"] == {"hw_slowdown": 2.0, "sw_power_cap": 4.0}
    assert (gpu["utilization_mean"], gpu["utilization_peak"], gpu["power_peak_w"]) == (72.5, 100, 300.0)
    assert facts["phases"][0]["duration_s"] == 6.5


def test_a_torn_last_line_and_a_phase_the_kernel_never_stopped_are_stated():
    text = "\n".join([
        json.dumps({"kind": "start", "phase": "training", "time": 10.0, "interval_s": 2.0, "gpu": "no NVIDIA GPU (x)",
                    "cpu_count": 2, "gpus": []}),
        json.dumps({"kind": "sample", "phase": "training", "time": 10.0, "workers": 0, "kernel_cpu_percent": None,
                    "kernel_rss_bytes": GIB}),
        json.dumps({"kind": "sample", "phase": "training", "time": 12.0, "workers": 1, "workers_cpu_percent": 150.0,
                    "workers_rss_bytes": GIB, "kernel_cpu_percent": 3.0, "kernel_rss_bytes": GIB}),
        '{"kind": "sample", "phase": "train',  # the kernel died mid-write
    ])
    records, unreadable = parse_telemetry(text)
    facts = summarize_telemetry(records, unreadable)
    (phase,) = facts["phases"]
    assert (unreadable, phase["stopped"], phase["samples"], phase["duration_s"]) == (1, False, 2, 2.0)
    assert phase["workers_cpu_percent_mean"] == 150.0  # while a worker ran: the sample before it started is no share
    assert phase["sampler_cpu_s"] is None and facts["energy_kwh"] is None
    summary = "\n".join(telemetry_section(facts))
    assert "Not stopped (the kernel ended during the phase; its timeline ends at the last sample): training." in summary
    assert "1 line(s) of system_metrics.jsonl are not JSON" in summary


def test_the_summary_states_the_machine_line_and_the_section_only_for_a_sampled_run():
    from tests.test_summary import completed_facts

    facts = completed_facts()
    assert "machine" not in render_summary(facts) and "## System metrics" not in render_summary(facts)
    facts["telemetry"] = summarize_telemetry([
        {"kind": "start", "phase": "training", "time": 0.0, "interval_s": 2.0, "gpu": "no NVIDIA GPU (NVML: none)",
         "cpu_count": 2, "gpus": []},
        {"kind": "sample", "phase": "training", "time": 0.0, "workers": 1, "workers_cpu_percent": None,
         "workers_rss_bytes": GIB, "kernel_cpu_percent": None, "kernel_rss_bytes": GIB // 2},
        {"kind": "sample", "phase": "training", "time": 60.0, "workers": 1, "workers_cpu_percent": 190.0,
         "workers_rss_bytes": 3 * GIB // 2, "kernel_cpu_percent": 2.0, "kernel_rss_bytes": GIB // 2},
        {"kind": "stop", "phase": "training", "time": 60.0, "samples": 2, "errors": 0, "sampler_cpu_s": 0.03},
    ])
    text = render_summary(facts)
    assert ("- **machine**: training (60 s): workers 190% of one core (of 2), peak 1.50 GiB resident; "
            "no GPU sampled\n") in text
    assert "GPU: no NVIDIA GPU (NVML: none)." in text  # why, in the section
    assert "| training | 60.0 | 2 | 0.03 s (0.05%) | 1 | 190% | 1.50 GiB | 2% | 0.50 GiB | n/a | n/a |" in text


# --- the verifier, on a run built directly ------------------------------------------------------------


def test_the_verifier_computes_the_facts_again_from_the_timeline(tmp_path, official_params):
    run = Run.start({**official_params, **profile("embedded"), "telemetry_interval_s": 0.1,
                     "run_dir": str(tmp_path / "run")})

    @sample_system_metrics("training")
    def train(cfg, run_dir):
        subprocess.run([sys.executable, "-c", BUSY_CHILD.format(seconds=0.5)], check=True)
        raise RuntimeError("the training failed after the worker ran")

    run.phase("training", train)
    with pytest.raises(RunFailed, match="FAILED in phase training"):
        run.finish()
    assert verify(run.dir) == []
    facts = json.loads((run.dir / "m44_summary.json").read_text(encoding="utf-8"))
    # The test process's other children (another test's browser) count too: at least the one started here.
    assert facts["telemetry"] == load_telemetry(run.dir) and facts["telemetry"]["phases"][0]["workers_peak"] >= 1
    assert "- **machine**: " in (run.dir / "m44_summary.md").read_text(encoding="utf-8")
    assert "system_metrics.png" in facts["plots"]
    path = run.dir / "system_metrics.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    sample = json.loads(lines[2])
    lines[2] = json.dumps({**sample, "memory_used_bytes": 10**15}) + "\n"  # a sample changed after the run
    path.write_text("".join(lines), encoding="utf-8")
    problems = verify(run.dir)
    assert problems[0].startswith("system_metrics.jsonl: ")  # the manifest names the changed file
    assert problems[1].startswith("m44_summary.json: telemetry is {") and problems[1].endswith(
        "but system_metrics.jsonl gives " + repr(load_telemetry(run.dir)))


# --- through the real notebook ---------------------------------------------------------------------------

SAMPLED_RUN = {**SHORT_RUN, "telemetry_interval_s": 0.25}  # a sample every 0.25 s


@pytest.mark.notebook
def test_a_sampler_failing_at_every_reading_does_not_fail_the_run(faulty_completed_run):
    """The run completed (its generations are strange too: tests/conftest.py, FAULTY_COMPLETED)."""
    run_dir = faulty_completed_run
    records = records_of(run_dir / "system_metrics.jsonl")
    errors = [r for r in records if r["kind"] == "error"]
    assert {(e["phase"], e["message"].split(": ", 1)[1]) for e in errors} == {
        (phase, "sensor unreadable (injected by the test)") for phase in ("training", "evaluation")}
    assert [r["phase"] for r in records if r["kind"] == "stop"] == ["training", "evaluation"]
    facts = json.loads((run_dir / "m44_summary.json").read_text(encoding="utf-8"))
    assert facts["status"] == "completed" and facts["telemetry"]["errors"]
    summary = (run_dir / "m44_summary.md").read_text(encoding="utf-8")
    assert "Sampler errors (each recorded once in system_metrics.jsonl; sampling and the run went on):" in summary
    notebook = (run_dir / "run.ipynb").read_text(encoding="utf-8")
    assert "sampler error(s) in training, recorded in system_metrics.jsonl" in notebook  # reported where it ran
    assert verify(run_dir) == []


@pytest.mark.notebook
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_killed_worker_leaves_the_timeline_up_to_the_kill(tmp_path):
    run_dir, mark = tmp_path / "run", tmp_path / "killed-at"
    env = {**with_fault("sigkill"), "M44_FAULT_MARK": str(mark)}
    done = papermill_command(run_dir, SAMPLED_RUN, env=env)
    assert done.returncode != 0 and "FAILED in phase training" in done.stderr, done.stderr[-3000:]
    killed_at = float(mark.read_text(encoding="utf-8"))
    training = [r for r in records_of(run_dir / "system_metrics.jsonl") if r["phase"] == "training"]
    samples = [r for r in training if r["kind"] == "sample"]
    alive = [s for s in samples if s["workers"] == 1 and s["time"] <= killed_at]
    # The worker sampled as it ran, one sample per period up to the kill; then the sampler stopped with the phase.
    assert alive and alive[-1]["time"] > killed_at - 2 * SAMPLED_RUN["telemetry_interval_s"] - 1
    assert any(s["workers_cpu_percent"] for s in alive)
    assert samples[-1]["time"] > killed_at and samples[-1]["workers"] == 0
    assert training[-1]["kind"] == "stop" and training[-1]["errors"] == 0
    assert not [r for r in records_of(run_dir / "system_metrics.jsonl") if r["phase"] == "evaluation"]
    facts = json.loads((run_dir / "m44_summary.json").read_text(encoding="utf-8"))
    assert facts["telemetry"]["phases"][0]["workers_peak"] == 1 and verify(run_dir) == []


def test_the_gpu_snapshot_states_what_nvml_says(tmp_path, official_params, fake_nvml):
    from lib.config import RunConfig
    from lib.snapshot import write_gpu_snapshot

    RunConfig.from_parameters({**official_params, "run_dir": str(tmp_path)}).save(tmp_path)
    text = write_gpu_snapshot(tmp_path).read_text(encoding="utf-8")
    assert "\nNVML: NVIDIA driver 580.00.00 (fake), 1 GPU(s) (NVML 13.580.00 (fake))\n" in text


def test_the_report_shows_the_timeline_with_an_alt_text_stating_each_phase(tmp_path):
    import html
    import re

    from lib.report import timeline_html

    sample_a_busy_child(tmp_path / "system_metrics.jsonl", seconds=0.3)
    telemetry.draw_timeline(tmp_path)
    facts = load_telemetry(tmp_path)
    page = timeline_html(facts, (tmp_path / "system_metrics.png").read_bytes())
    alt = html.unescape(re.search(r'<img src="data:image/png;base64,[^"]+" alt="([^"]+)">', page)[1])
    (phase,) = facts["phases"]
    assert alt.startswith("Timeline chart, phases shaded: CPU share and resident memory of the workers and of the "
                          "kernel over time. training (")
    assert f"workers {phase['workers_cpu_percent_mean']:.0f}% of one core (of " in alt
    assert "A sample every 0.1 s while training and evaluation ran" in html.unescape(page)
