"""Run state and failure semantics: a failed phase is recorded, dependents skip, evidence is complete."""

from __future__ import annotations

import json
import signal

import pytest

from lib.contract import REQUIRED_ALWAYS, STATEMENTS
from lib.evidence import sha256_file, write_json
from lib.execute import Stop
from lib.run import Refused, Run, RunFailed
from tests.conftest import profile


def start(tmp_path, official_params, **overrides) -> Run:
    return Run.start({**official_params, **profile("embedded"), "run_dir": str(tmp_path / "run"), **overrides})


def boom(cfg, run_dir):
    raise OSError("disk on fire")


def test_failed_phase_skips_dependents_and_finish_documents_then_raises(tmp_path, official_params):
    run = start(tmp_path, official_params)
    assert run.phase("preflight", boom) is None
    assert run.phase("training", lambda cfg, run_dir: pytest.fail("must not run"), needs="preflight") is None
    with pytest.raises(RunFailed, match="FAILED in phase preflight: disk on fire"):
        run.finish()

    assert run.phases["training"].status == "skipped"
    assert run.phases["training"].cause == "skipped because preflight failed"
    for name in REQUIRED_ALWAYS + ("failure_analysis.md", "manifest.json", "config.json"):
        assert (run.dir / name).exists(), name
    analysis = (run.dir / "failure_analysis.md").read_text(encoding="utf-8")
    assert "**phase**: preflight" in analysis and "OSError: disk on fire" in analysis
    assert "training (skipped because preflight failed)" in analysis
    assert "Traceback" in analysis and "in boom" in analysis
    metrics = json.loads((run.dir / "training_metrics.json").read_text(encoding="utf-8"))
    assert metrics["status"] == "skipped" and metrics["history"] == []
    summary = (run.dir / "m44_summary.md").read_text(encoding="utf-8")
    for line in STATEMENTS:
        assert line in summary.splitlines()
    assert "failed in preflight" in summary
    assert not (run.dir / "evaluation_results.json").exists()


def test_a_phase_does_not_start_once_the_launcher_was_stopped(tmp_path, official_params):
    """A signal to lib.execute while the kernel is between cells is lost to the kernel (it ignores Ctrl-C there);
    the stop request the launcher writes is what the next phase reads."""
    run = start(tmp_path, official_params)
    stop = Stop()
    stop.received = signal.SIGTERM
    stop.claimed(run.dir)  # writes stop_request.json, as lib.execute does on the signal
    assert run.phase("preflight", lambda cfg, run_dir: pytest.fail("must not run")) is None
    assert run.phases["preflight"].status == "failed"
    assert run.phases["preflight"].cause.startswith("stopped by SIGTERM sent to lib.execute (pid ")
    with pytest.raises(RunFailed, match="FAILED in phase preflight: stopped by SIGTERM"):
        run.finish()


def test_manifest_hashes_every_file(tmp_path, official_params):
    run = start(tmp_path, official_params)
    run.phase("preflight", boom)
    with pytest.raises(RunFailed):
        run.finish()
    manifest = json.loads((run.dir / "manifest.json").read_text(encoding="utf-8"))
    listed = {f["path"]: f["sha256"] for f in manifest["files"]}
    on_disk = {p.name for p in run.dir.iterdir() if p.name != "manifest.json"}
    assert set(listed) == on_disk
    assert all(listed[name] == sha256_file(run.dir / name) for name in listed)


def test_invalid_parameter_is_documented_not_raised_at_start(tmp_path, official_params):
    run = start(tmp_path, official_params, max_steps=-3)
    assert run.cfg is None and run.phases["parameters"].status == "failed"
    assert run.phase("preflight", boom) is None  # skipped: parameters failed
    with pytest.raises(RunFailed, match="'max_steps' must be >= 1"):
        run.finish()
    assert "max_steps" in (run.dir / "failure_analysis.md").read_text(encoding="utf-8")
    assert "parameters" in (run.dir / "env_snapshot.txt").read_text(encoding="utf-8")


def test_a_folder_holding_a_run_is_refused_and_left_untouched(tmp_path, official_params):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "m44_summary.md").write_text("earlier run", encoding="utf-8")
    with pytest.raises(Refused, match="already holds a run"):
        start(tmp_path, official_params)
    assert [p.name for p in run_dir.iterdir()] == ["m44_summary.md"]
    assert (run_dir / "m44_summary.md").read_text(encoding="utf-8") == "earlier run"


def test_papermill_output_and_gitkeep_do_not_make_a_folder_used(tmp_path, official_params):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.ipynb").write_text("{}", encoding="utf-8")
    (tmp_path / "run" / ".gitkeep").write_text("", encoding="utf-8")
    assert start(tmp_path, official_params).cfg is not None


def test_json_writes_are_atomic(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"loss": 1.0})
    with pytest.raises(ValueError):
        write_json(path, {"loss": float("nan")})  # refused: NaN is not JSON
    assert json.loads(path.read_text(encoding="utf-8")) == {"loss": 1.0}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left
