"""lib.compare: two real run folders side by side, and the parts of a comparison no CPU run can show (a GPU run's
snapshots, eval sets that differ in one way or another) on the comparison's own pure functions."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lib import compare
from lib.compare import (
    COMPARE_ROOT, HTML_NAME, JSON_NAME, STYLESHEETS, compare_runs, main, render_html, render_text, why_not_paired,
)
from lib.config import REPO_ROOT
from lib.contract import (
    CLAIM, CONFIG, DATA_REPORT, ENV_SNAPSHOT, EVAL_RESULTS, GPU_SNAPSHOT, MANIFEST, PHASES, PREFLIGHT, SUMMARY,
    SUMMARY_FACTS, TRAINING_METRICS,
)
from lib.evidence import read_json, write_json
from lib.rehearsal import RECORD as REHEARSAL
from lib.stats import paired_comparison
from lib.verify import verify
from tests.browser import FIRST_SCREEN, WIDTHS, on_first_screen, open_report
from tests.conftest import SHORT_PAPERMILL, build_papermill_run, copy_run
from tests.test_architecture import imported_by

# Run A is the suite's short papermill run (tests/conftest.py: SHORT_PAPERMILL, shared with the verifier's tests).
CHANGED = {"learning_rate": 0.001}  # run B differs from run A in this parameter alone (A: the profile's 0.003)
MODIFIED_ITEM = "eval-v2-003"  # among the 20 scored; its expected answer is changed in the modified eval file


def _build_modified_data(folder: Path) -> None:
    """Run A's settings on a copy of the shipped eval file in which one scored item expects another answer."""
    lines = (REPO_ROOT / "data" / "eval_v2.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    n, item = next((n, json.loads(line)) for n, line in enumerate(lines) if json.loads(line)["id"] == MODIFIED_ITEM)
    lines[n] = json.dumps({**item, "expected_answer": item["expected_answer"] + "0"}, ensure_ascii=False) + "\n"
    eval_file = folder / "eval_modified.jsonl"
    eval_file.write_text("".join(lines), encoding="utf-8", newline="\n")
    build_papermill_run({**SHORT_PAPERMILL, "eval_file": str(eval_file)})(folder)


@pytest.fixture(scope="module")
def run_a(papermill_run) -> Path:
    return papermill_run


@pytest.fixture(scope="module")
def run_b(shared_run) -> Path:
    return shared_run("compare-b", build_papermill_run({**SHORT_PAPERMILL, **CHANGED})) / "run"


@pytest.fixture(scope="module")
def run_modified_data(shared_run) -> Path:
    return shared_run("compare-modified-data", _build_modified_data) / "run"


def run_compare(*args: str | Path) -> subprocess.CompletedProcess:
    """The command as a user runs it."""
    return subprocess.run([sys.executable, "-m", "lib.compare", *map(str, args)], cwd=REPO_ROOT, capture_output=True,
                          text=True, encoding="utf-8")


def compared(run_a: Path, run_b: Path, out: Path, status: int = 0) -> tuple[dict, str, str]:
    """Compare two runs into `out`: (compare.json, compare.html, what it printed); the exit status checked."""
    done = run_compare(run_a, run_b, "--out", out)
    assert done.returncode == status, done.stdout + done.stderr
    return read_json(out / JSON_NAME), (out / HTML_NAME).read_text(encoding="utf-8"), done.stdout


def differing(facts: dict, section: str) -> list[str]:
    return [d["name"] for d in facts["differences"][section]["differ"]]


def table_rows(page: str, kind: str) -> list[str]:
    """The first cell of each body row of the page's table of class `kind`."""
    table = re.search(rf'<table class="[^"]*\b{kind}\b[^"]*">(.*?)</table>', page, re.S)
    return re.findall(r"<tr><td>(.*?)</td>", table[1]) if table else []


def files_of(run_dir: Path) -> dict[str, int]:
    return {p.relative_to(run_dir).as_posix(): p.stat().st_mtime_ns for p in run_dir.rglob("*")}


# --- two real runs -------------------------------------------------------------------------------------------------


@pytest.mark.notebook
def test_two_runs_differing_in_one_parameter_list_exactly_it_and_get_the_paired_test(run_a, run_b, tmp_path):
    before = {run: files_of(run) for run in (run_a, run_b)}
    facts, page, printed = compared(run_a, run_b, tmp_path / "out")

    assert differing(facts, "parameters") == ["learning_rate"]
    assert facts["differences"]["parameters"]["differ"] == [{"name": "learning_rate", "A": 0.003, "B": 0.001}]
    assert table_rows(page, "cmp-parameters") == ["learning_rate"]
    for section in ("code", "environment", "hardware", "data"):
        assert differing(facts, section) == [], section
        assert facts["differences"][section]["equal"] > 0, section
    equal = len(read_json(run_a / "config.json")["parameters"]) - 2  # all but run_dir (not compared), learning_rate
    assert f"parameters: 1 differs, {equal} equal: learning_rate 0.003 -> 0.001" in printed

    # The paired test is the project's own, on the two trained models, item by item.
    items = [{i["id"]: i for i in read_json(run / EVAL_RESULTS)["items"]} for run in (run_a, run_b)]
    assert list(items[0]) == list(items[1]) and len(items[0]) == 20
    expected = paired_comparison([i["trained"]["correct_strict"] for i in items[0].values()],
                                 [i["trained"]["correct_strict"] for i in items[1].values()])
    paired = facts["paired"]
    assert paired["possible"] and paired["n"] == 20 and paired["tests"]["strict"] == expected
    assert paired["verdict"].startswith("Run B's trained model") and paired["verdict"] in printed
    disagreeing = {d["id"] for d in paired["disagreements"]}
    assert disagreeing == {i for i in items[0] if items[0][i]["trained"]["output"] != items[1][i]["trained"]["output"]}
    assert len(re.findall('<article class="m44-example">', page)) == min(len(disagreeing), compare.EXAMPLES)

    # Results side by side, from the runs' own files.
    curves = facts["results"]["curves"]
    for label, run in (("A", run_a), ("B", run_b)):
        history = read_json(run / TRAINING_METRICS)["history"]
        assert curves[label] == [{"step": h["step"], "tokens": h["num_input_tokens_seen"], "loss": h["loss"]}
                                 for h in history]
    headline = {row["name"]: row for row in facts["results"]["headline"]}
    accuracy = [read_json(run / EVAL_RESULTS)["metrics"]["trained"]["accuracy"] for run in (run_a, run_b)]
    assert [headline["trained strict accuracy"][k] for k in ("A", "B")] == accuracy
    assert {row["category"] for row in facts["results"]["groups"]["category"]} == {
        i["category"] for i in items[0].values()}

    # The page is the rendering of compare.json; neither run folder was touched, and both still verify.
    stylesheet = "\n".join(path.read_text(encoding="utf-8") for path in STYLESHEETS)
    assert page == render_html({k: v for k, v in facts.items() if k != "compared_utc"}, stylesheet)
    assert {run: files_of(run) for run in (run_a, run_b)} == before
    assert verify(run_a) == [] and verify(run_b) == []


@pytest.mark.notebook
def test_shipped_against_modified_data_shows_the_data_and_runs_no_paired_test(run_a, run_modified_data, tmp_path):
    facts, page, printed = compared(run_a, run_modified_data, tmp_path / "out")

    assert differing(facts, "parameters") == ["eval_file"]
    assert {"eval file", "eval sha256"} <= set(differing(facts, "data"))
    assert "training sha256" not in differing(facts, "data")
    assert {"eval file", "eval sha256"} <= set(table_rows(page, "cmp-data"))
    paired = facts["paired"]
    assert not paired["possible"] and "tests" not in paired
    assert f"the same ids, but 1 has another expected answer in run B ({MODIFIED_ITEM})" in paired["why_not"]
    assert "No paired test is possible" in page and f"No paired test: {paired['why_not']}" in printed


@pytest.mark.notebook
def test_a_failed_run_against_a_completed_one(failed_run, run_a, tmp_path):
    facts, page, printed = compared(failed_run, run_a, tmp_path / "out")

    assert facts["runs"]["A"]["status"] == "failed in preflight" and facts["runs"]["B"]["status"] == "completed"
    assert {d["name"]: (d["A"], d["B"]) for d in facts["differences"]["outcome"]["differ"]}["status"] == (
        "failed in preflight", "completed")
    assert facts["differences"]["data"]["absent"] == {"A": [DATA_REPORT]}
    assert "eval_file" in differing(facts, "parameters")
    assert facts["paired"]["why_not"].startswith("run A has no evaluation results (its status: failed in preflight)")
    assert facts["results"]["curves"]["A"] == [] and facts["results"]["curves"]["B"]
    assert "data: 13 differ, 0 equal (run A has no data_report.json)" in printed


@pytest.mark.notebook
def test_an_interrupted_run_and_one_that_fails_verification_are_compared_and_named(run_a, run_b, tmp_path):
    # As a launcher killed during evaluation leaves its folder: no consolidation, the phase still "running".
    interrupted = copy_run(run_b, tmp_path / "interrupted")
    for name in (SUMMARY_FACTS, SUMMARY, MANIFEST, EVAL_RESULTS, "evaluation_summary.md", "comparison.png"):
        (interrupted / name).unlink()
    state = read_json(interrupted / PHASES)
    state["phases"][-1].update(status="running", duration_s=0.0)
    (interrupted / PHASES).write_text(json.dumps(state), encoding="utf-8")
    facts, page, _ = compared(run_a, interrupted, tmp_path / "out-interrupted", status=1)
    assert facts["runs"]["B"]["status"] == "interrupted in evaluation, never consolidated"
    assert differing(facts, "parameters") == ["learning_rate"]
    assert facts["runs"]["B"]["verification"]["problems"][0].startswith("m44_summary.json: missing")
    assert facts["paired"]["why_not"].startswith("run B has no evaluation results")

    tampered = copy_run(run_b, tmp_path / "tampered")
    log = tampered / "training_log.txt"
    log.write_bytes(log.read_bytes().replace(b"loss", b"LOSS", 1))
    facts, page, printed = compared(run_a, tampered, tmp_path / "out-tampered", status=1)
    problems = facts["runs"]["B"]["verification"]["problems"]
    assert not facts["runs"]["B"]["verification"]["ok"] and problems[0].startswith("training_log.txt:")
    assert "VERIFICATION FAILED" in page and "FAILS VERIFICATION" in page
    assert f"Run B: {tampered}: completed; FAILS VERIFICATION: 1 problem(s), the first: training_log.txt" in printed
    assert facts["paired"]["possible"]  # its results are still compared, under the warning


@pytest.mark.notebook
def test_two_copies_of_one_run_and_outputs_into_a_run_folder_are_refused(run_a, run_b, tmp_path):
    copy = copy_run(run_a, tmp_path / "copy")
    done = run_compare(run_a, copy, "--out", tmp_path / "out")
    assert done.returncode == 2 and "are one run (both hold the claim of one run" in done.stderr
    assert not (tmp_path / "out").exists()
    for inside in (run_a / "compare", run_b, tmp_path / "copy" / "sub"):
        done = run_compare(run_a, run_b, "--out", inside)
        assert done.returncode == 2 and "is inside the run folder" in done.stderr, done.stderr
        assert "choose a folder outside every run folder" in done.stderr
    assert not (run_a / "compare").exists() and verify(run_a) == []
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine\n", encoding="utf-8")
    done = run_compare(run_a, run_b, "--out", tmp_path / "used")
    assert done.returncode == 2 and "already exists and is not an empty folder" in done.stderr
    assert sorted(p.name for p in (tmp_path / "used").iterdir()) == ["keep.txt"]


@pytest.mark.notebook
def test_without_out_the_files_go_to_a_new_folder_under_build_compare(run_a, run_b, capsys):
    existing = set(COMPARE_ROOT.iterdir()) if COMPARE_ROOT.exists() else set()
    assert main([str(run_a), str(run_b)]) == 0
    new = set(COMPARE_ROOT.iterdir()) - existing
    try:
        assert len(new) == 1
        folder = new.pop()
        assert folder.name.startswith("short-papermill_run-vs-compare-b_run-")  # two folders named run: their parents too
        assert sorted(p.name for p in folder.iterdir()) == [HTML_NAME, JSON_NAME]
        assert f"Written: {folder / HTML_NAME}" in capsys.readouterr().out
    finally:
        for folder in new:
            shutil.rmtree(folder)


@pytest.mark.notebook
def test_the_page_in_a_browser_at_1400_and_900_px(browser, run_a, run_b, tmp_path):
    tampered = copy_run(run_b, tmp_path / "tampered")
    (tampered / "training_log.txt").write_text("edited\n", encoding="utf-8")
    for other, out, status in ((run_b, tmp_path / "out", 0), (tampered, tmp_path / "out-tampered", 1)):
        compared(run_a, other, out, status)
        for width in WIDTHS:
            page = open_report(browser, out, width, f"compare-{out.name}-{width}.png", page_name=HTML_NAME)
            outcome = on_first_screen(page, "outcome")
            assert ("BOTH VERIFIED" if status == 0 else "VERIFICATION FAILED") in outcome
            # Both runs' verification, the counts of what differs, and the verdict: all on the first screen.
            for selector in (".cmp-verification", ".cmp-counts", ".cmp-verdict"):
                bottom, text = browser.execute_script(
                    "const el = document.querySelector(arguments[0]); const r = el.getBoundingClientRect();"
                    "return [r.bottom + scrollY, el.innerText];", selector)
                assert bottom <= FIRST_SCREEN, f"{width} px: {selector} ends at {bottom:.0f} px"
            verification = browser.execute_script("return document.querySelector('.cmp-verification').innerText")
            if status:
                assert "FAILS VERIFICATION" in verification and "training_log.txt" in verification
            assert "learning_rate" in browser.execute_script(
                "return document.querySelector('table.cmp-parameters').innerText")
            assert len(page["images"]) == 1  # the loss curves, with their alt text (checked by open_report)


# --- the comparison's pure functions, on the files a run would hold ------------------------------------------------


GPU_SNAPSHOT_TEXT = """# GPU snapshot (M44.0 pre-flight)

torch device 0: NVIDIA GeForce RTX 5090, 31.4 GiB, compute capability 12.0
torch build architectures: sm_75 sm_80 sm_86 sm_90 sm_100 sm_120

## nvidia-smi --query-gpu
name, memory.total [MiB], memory.free [MiB], driver_version, compute_cap
NVIDIA GeForce RTX 5090, 32607 MiB, 30990 MiB, 576.02, 12.0

## nvidia-smi
(the table)
"""
CPU_SNAPSHOT_TEXT = """# GPU snapshot (M44.0 pre-flight)

No CUDA device is visible to torch (torch.cuda.is_available() is False).

## nvidia-smi --query-gpu
nvidia-smi query unavailable on this machine

## nvidia-smi
nvidia-smi not found or failed: no NVIDIA driver on this machine
"""
ENV_TEXT = """# Environment snapshot (M44.0 pre-flight)

commit: 0123abc
working tree dirty: False (ignored paths marked !!; the run folder left out)
python: 3.11.7 ({python})
torch: {torch}
torch.version.cuda: {cuda}
cudnn: None
os: {os}
cpu: x86_64, {cores} logical cores
ram: 23.5 GiB total, {free} GiB available

## environment variables (credentials: set or not; their values never appear)
M44_CLAIM_TOKEN=[REDACTED]

## packages
torch=={torch}
transformers==5.24.0

## resolved config (config.json)
{{}}
"""


def fake_run(path: Path, **files) -> dict:
    """One side of a comparison as lib.compare.read_run returns it, holding only `files` (by contract name)."""
    run = {name: None for name in (CONFIG, PHASES, SUMMARY_FACTS, TRAINING_METRICS, EVAL_RESULTS, DATA_REPORT, PREFLIGHT,
                                   CLAIM, REHEARSAL, ENV_SNAPSHOT, GPU_SNAPSHOT)}
    return {**run, **files, "path": path,
            "verification": {"checked": True, "ok": True, "problems": [], "verified": 1, "notes": []}}


def item(n: int, correct: bool, answer: str = "7", prompt: str = "What is 3 + 4?", output: str | None = None) -> dict:
    scored = {"output": output or f"<answer>{answer if correct else 'x'}</answer>", "extracted": answer if correct else "x",
              "correct_strict": correct, "correct_lenient": correct, "format_ok": True, "tokens": 5, "seconds": 0.1}
    return {"id": f"eval-{n:03d}", "prompt": prompt, "expected_answer": answer, "section": "core", "category": "sum",
            "difficulty": "easy", "trained": {**scored, "correct": correct}}


def results(items: list[dict]) -> dict:
    return {"metrics": {}, "items": items}


def test_a_gpu_run_against_a_cpu_run_names_the_gpu_driver_and_cuda():
    gpu = fake_run(Path("gpu/m44_v1"), **{
        ENV_SNAPSHOT: ENV_TEXT.format(python="C:\\m44\\.venv\\Scripts\\python.exe", torch="2.13.0+cu128", cuda="12.8",
                                      os="Windows-11-10.0.26100-SP0", cores=32, free=50.1),
        GPU_SNAPSHOT: GPU_SNAPSHOT_TEXT})
    cpu = fake_run(Path("cpu/run"), **{
        ENV_SNAPSHOT: ENV_TEXT.format(python="/work/.venv/bin/python", torch="2.13.0+cpu", cuda="None",
                                      os="Linux-6.18-x86_64", cores=2, free=22.4),
        GPU_SNAPSHOT: CPU_SNAPSHOT_TEXT})
    facts = compare_runs(cpu, gpu)
    environment = {d["name"]: (d["A"], d["B"]) for d in facts["differences"]["environment"]["differ"]}
    assert environment == {
        "torch": ("2.13.0+cpu", "2.13.0+cu128"),
        "CUDA (torch build)": ("None", "12.8"),
        "GPU": ("none visible to torch", "NVIDIA GeForce RTX 5090"),
        "NVIDIA driver": ("none", "576.02"),
        "os": ("Linux-6.18-x86_64", "Windows-11-10.0.26100-SP0"),
        "package torch": ("2.13.0+cpu", "2.13.0+cu128"),
    }  # the interpreter's path, the free memory and the launcher's claim token are not differences
    hardware = {d["name"]: (d["A"], d["B"]) for d in facts["differences"]["hardware"]["differ"]}
    assert hardware == {
        "CPU": ("x86_64, 2 logical cores", "x86_64, 32 logical cores"),
        "GPU 0": (None, "31.4 GiB, compute capability 12.0"),
        "GPU 0 memory (nvidia-smi)": (None, "32607 MiB"),
        "CUDA architectures (torch build)": (None, "sm_75 sm_80 sm_86 sm_90 sm_100 sm_120"),
    }
    assert facts["differences"]["parameters"] == {"differ": [], "equal": 0, "absent": {"A": [CONFIG], "B": [CONFIG]}}
    text = render_text(facts, "out")
    assert "environment: 6 differ, 3 equal: torch 2.13.0+cpu -> 2.13.0+cu128" in text
    assert "parameters: nothing differs, 0 equal (run A has no config.json)" in text


@pytest.mark.parametrize(("b_items", "why"), [
    ([item(1, True)], "the runs scored different eval items: run A 2, run B 1; 1 only in run A (eval-002)"),
    ([item(1, True), item(2, True), item(3, True)], "run A 2, run B 3; 1 only in run B (eval-003)"),
    ([item(1, True, answer="8"), item(2, True)], "1 has another expected answer in run B (eval-001): different eval sets"),
    ([item(1, True), item(2, True, prompt="What is 4 + 3?")], "1 has another prompt in run B (eval-002)"),
    ([item(1, True), item(1, False)], "run B's eval items repeat ids (eval-001), so items cannot be matched by id"),
    ([], "run B scored no trained model"),
])
def test_different_eval_sets_say_why_no_paired_test_is_possible(b_items, why):
    a = fake_run(Path("a"), **{EVAL_RESULTS: results([item(1, True), item(2, False)])})
    b = fake_run(Path("b"), **{EVAL_RESULTS: results(b_items)})
    assert why in why_not_paired(a, b)
    paired = compare_runs(a, b)["paired"]
    assert paired == {"possible": False, "why_not": why_not_paired(a, b)}


def test_the_paired_test_is_run_b_minus_run_a_and_lists_every_disagreement_first_by_correctness():
    a_items = [item(n, n <= 2) for n in range(1, 13)]  # A right on 1-2
    b_items = [item(n, n <= 10, output=None if n != 12 else "<answer>x</answer> (longer)") for n in range(1, 13)]
    b_items.reverse()  # the order of the items does not matter: they are matched by id
    a, b = (fake_run(Path(p), **{EVAL_RESULTS: results(i)}) for p, i in (("a", a_items), ("b", b_items)))
    paired = compare_runs(a, b)["paired"]
    strict = paired["tests"]["strict"]
    assert (strict["n"], strict["trained_only"], strict["baseline_only"]) == (12, 8, 0)
    assert strict["difference"] == pytest.approx(8 / 12) and strict["mcnemar_p"] == pytest.approx(2 * 0.5**8)
    assert paired["verdict"].startswith("Run B's trained model beats run A's on strict accuracy: 8 items right only "
                                        "in run B, 0 only in run A")
    assert [(d["id"], d["why"]) for d in paired["disagreements"]] == [
        *((f"eval-{n:03d}", "right only in run B") for n in range(3, 11)),
        ("eval-012", "the same answer, different outputs")]
    swapped = compare_runs(b, a)["paired"]
    assert swapped["tests"]["strict"]["difference"] == pytest.approx(-8 / 12)
    assert swapped["verdict"].startswith("Run B's trained model is worse than run A's")


def test_a_malformed_file_makes_its_part_not_comparable_and_the_rest_goes_on():
    broken = fake_run(Path("a"), **{TRAINING_METRICS: {"status": "completed", "history": [{"step": 1}]},
                                    CONFIG: {"parameters": {"seed": 1}}, SUMMARY_FACTS: {"model": "embedded"}})
    fine = fake_run(Path("b"), **{CONFIG: {"parameters": {"seed": 2}}})
    facts = compare_runs(broken, fine)
    assert facts["runs"]["A"]["status"] == "unknown (m44_summary.json or phases.json is malformed)"
    assert "could not be compared" in facts["results"]["unreadable"]
    assert "python -m lib.verify" in facts["results"]["unreadable"]
    assert facts["differences"]["parameters"]["differ"] == [{"name": "seed", "A": 1, "B": 2}]
    page = render_html(facts, "")
    assert facts["results"]["unreadable"].replace("'", "&#x27;") in page


def test_control_characters_in_outputs_show_escaped_on_the_page():
    a_items = [item(1, False, output="<answer>x\r\x0b</answer>\u2028")]
    b_items = [item(1, True)]
    a, b = (fake_run(Path(p), **{EVAL_RESULTS: results(i)}) for p, i in (("a", a_items), ("b", b_items)))
    page = render_html(compare_runs(a, b), "")
    assert "&lt;answer&gt;x\\r\\x0b&lt;/answer&gt;\\u2028" in page
    assert "\r" not in page and "\x0b" not in page and "\u2028" not in page


def test_a_rehearsals_folder_stands_for_its_run_with_nothing_to_verify(tmp_path):
    rehearsal = tmp_path / "official-rehearsal"
    rehearsal.mkdir()
    write_json(rehearsal / CONFIG, {"valid": True, "parameters": {"model_name": "google/gemma-2b", "seed": 42}})
    write_json(rehearsal / PREFLIGHT, {"checks": [{"name": "device", "status": "pass", "detail": "RTX 5090"}]})
    write_json(rehearsal / REHEARSAL, {"commit": "abc123", "diff_sha256": "e3b0", "host": "box"})
    run = compare.read_run(rehearsal)
    assert run["verification"]["checked"] is False and run["verification"]["ok"]
    official = fake_run(Path("m44_v1"), **{
        CONFIG: {"valid": True, "parameters": {"model_name": "google/gemma-2b", "seed": 43}},
        PREFLIGHT: {"checks": [{"name": "device", "status": "pass", "detail": "RTX 5090"}]},
        SUMMARY_FACTS: {"status": "completed", "launcher": "lib.execute", "model": "google/gemma-2b", "phases": [],
                        "run_time_s": 1.0, "repository": {"commit": "abc123", "dirty": False}}})
    facts = compare_runs(run, official)
    assert facts["runs"]["A"]["status"] == "rehearsal: pre-flight passed"
    assert facts["differences"]["parameters"]["differ"] == [{"name": "seed", "A": 42, "B": 43}]
    assert {"name": "commit", "A": "abc123", "B": "abc123"} not in facts["differences"]["code"]["differ"]
    text = render_text(facts, "out")
    assert "Run A: " in text and "a rehearsal (pre-flight only, claims nothing): it has no manifest" in text
    assert "NO VERIFICATION PROBLEM" in render_html(facts, "")
    (rehearsal / PREFLIGHT).unlink()
    with pytest.raises(compare.Refused, match="name a run folder .* or a rehearsal's folder"):
        compare.read_run(rehearsal)


def test_a_folder_that_is_no_run_folder_is_refused_by_name_and_nothing_is_written(tmp_path):
    (tmp_path / "notes").mkdir()
    done = run_compare(tmp_path / "notes", tmp_path / "absent", "--out", tmp_path / "out")
    assert done.returncode == 2
    assert f"{tmp_path / 'notes'} is not a run folder" in done.stderr and "name a run folder" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()


def test_the_comparison_needs_no_torch(tmp_path):
    done, modules = imported_by(["-m", "lib.compare", str(tmp_path), str(tmp_path)])
    assert done.returncode == 2 and {"lib.verify", "lib.plots", "matplotlib"} <= modules  # the walk sees the imports
    assert not {m.split(".")[0] for m in modules} & {"torch", "transformers", "peft", "IPython"}
