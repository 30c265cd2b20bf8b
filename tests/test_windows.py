"""The user's platform is Windows: what can be checked of it here, on Linux, by construction and by simulation.

Byte-exact data on a CRLF checkout, output in cp1252 with UTF-8 mode off (the cp1252 locale, made by `.ci/run`), a
scan of lib/ for POSIX-only calls that are not guarded by a platform test, and the Windows-only code paths that can
run here as functions (exit codes, multi-process refusal, keep-awake). What cannot be tested here is listed in
docs/WINDOWS.md.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import subprocess
import sys

import pytest

from lib import keep_awake, preflight
from lib.config import REPO_ROOT, load_config
from lib.data import load_eval_file, load_trace_file
from lib.launcher import WINDOWS_EXITS, describe_exit
from tests.conftest import EMBEDDED, windows_like, windows_locale_installed

FIXTURES = REPO_ROOT / "tests" / "data"
LIB = REPO_ROOT / "lib"


# --- line endings: a Git for Windows checkout keeps every hashed input's bytes ----------------------------------


def test_a_crlf_checkout_keeps_the_data_bytes_that_the_manifest_hashes(tmp_path):
    """`git -c core.autocrlf=true clone`, Git for Windows' default: data/ and models/ arrive byte for byte."""
    clone = tmp_path / "clone"
    done = subprocess.run(["git", "-c", "core.autocrlf=true", "clone", "--quiet", str(REPO_ROOT), str(clone)],
                          capture_output=True, text=True, encoding="utf-8")
    if done.returncode != 0:
        pytest.skip(f"cannot clone this checkout ({done.stderr.strip()[:200]})")
    manifest = json.loads((clone / "data" / "MANIFEST.json").read_text(encoding="utf-8"))
    hashed = {name: entry["sha256"] for name, entry in manifest["files"].items()}
    assert hashed, manifest
    for name, sha256 in hashed.items():  # as the run hashes them (data_report.json), which is their bytes
        loader = load_trace_file if name.startswith("dev-") else load_eval_file
        assert loader(clone / "data" / name).sha256 == sha256, name
    for config in (clone / "models").rglob("*.json"):
        assert b"\r\n" not in config.read_bytes(), config
    # Without .gitattributes the same clone converts them: the test can fail.
    assert "data/** -text" in (clone / ".gitattributes").read_text(encoding="utf-8")


def test_a_users_crlf_file_loads_and_is_hashed_as_its_bytes(tmp_path):
    lf = (REPO_ROOT / "data" / "dev-reasoning-v2.jsonl").read_bytes()
    crlf = tmp_path / "crlf.jsonl"
    crlf.write_bytes(lf.replace(b"\n", b"\r\n"))
    loaded, original = load_trace_file(crlf), load_trace_file(REPO_ROOT / "data" / "dev-reasoning-v2.jsonl")
    assert loaded.records == original.records and loaded.lines == original.lines
    assert loaded.sha256 == hashlib.sha256(crlf.read_bytes()).hexdigest() != original.sha256


# --- output: any user text prints on a cp1252 console or into a redirected file ---------------------------------


def test_the_data_check_prints_emoji_and_greek_into_a_redirected_file_under_cp1252(tmp_path):
    if not windows_locale_installed():
        pytest.skip("the cp1252 locale is not installed: localedef -i en_US -f CP1252 en_US.CP1252 (.ci/run does)")
    lines = (FIXTURES / "user_train.jsonl").read_text(encoding="utf-8").splitlines()
    train = tmp_path / "train.jsonl"
    record = json.loads(lines[0])
    repeated = {**record, "prompt": "Ποσο κάνει 🍎 + 🍎? λ"}  # Greek and an emoji: neither is in cp1252
    first = json.dumps(repeated, ensure_ascii=False)
    train.write_text("\n".join([first, first, *lines]) + "\n", encoding="utf-8")  # its repeat: the first note
    out = tmp_path / "out.txt"
    with out.open("wb") as redirected:
        done = subprocess.run([sys.executable, "-m", "lib.data_check", "--train", str(train),
                               "--eval", str(FIXTURES / "user_eval.jsonl"), "--params", str(EMBEDDED)],
                              cwd=REPO_ROOT, env=windows_like(), stdout=redirected, stderr=subprocess.PIPE)
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")[-2000:]
    text = out.read_bytes().decode("utf-8")
    assert "Ποσο κάνει 🍎 + 🍎? λ" in text and text.rstrip().endswith("A run would accept these files.")


def test_the_windows_like_environment_really_encodes_in_cp1252():
    if not windows_locale_installed():
        pytest.skip("the cp1252 locale is not installed: localedef -i en_US -f CP1252 en_US.CP1252 (.ci/run does)")
    probe = "import locale, sys; print(sys.stdout.encoding, locale.getpreferredencoding())"
    done = subprocess.run([sys.executable, "-c", probe], env=windows_like(), capture_output=True, text=True)
    assert [name.lower() for name in done.stdout.split()] == ["cp1252", "cp1252"]  # without lib.console.utf8_output, an emoji would fail here


# --- POSIX-only calls in lib/ only behind a platform test -------------------------------------------------------

POSIX_ONLY_NAMES = {"fork", "forkpty", "killpg", "setsid", "setpgrp", "getpgid", "getuid", "geteuid", "SIGKILL",
                    "SIGUSR1", "SIGUSR2", "SIGHUP", "SIGALRM", "SIGQUIT", "alarm", "preexec_fn", "start_new_session"}
POSIX_ONLY_MODULES = {"fcntl", "resource", "termios", "pwd", "grp", "pty"}
PLATFORM_TEST = re.compile(r"sys\.platform|os\.name|platform\.system|\bWINDOWS\b|\bLINUX\b|\bPOSIX\b")


def unguarded_posix_calls(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) for every POSIX-only call, import, signal, /proc path or shell=True outside a platform test."""
    found = []

    def visit(node: ast.AST, guarded: bool) -> None:
        if isinstance(node, (ast.If, ast.IfExp)) and PLATFORM_TEST.search(ast.unparse(node.test)):
            guarded = True
        what = None
        if isinstance(node, ast.Attribute) and node.attr in POSIX_ONLY_NAMES:
            what = node.attr
        elif isinstance(node, ast.keyword) and (node.arg in POSIX_ONLY_NAMES or (
                node.arg == "shell" and isinstance(node.value, ast.Constant) and node.value.value is True)):
            what = f"{node.arg}=" if node.arg != "shell" else "shell=True"
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            what = next((n for n in names if n.split(".")[0] in POSIX_ONLY_MODULES), None)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("/proc/"):
            what = node.value
        if what and not guarded:
            found.append((getattr(node, "lineno", 0), what))
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    visit(tree, False)
    return found


def test_lib_calls_nothing_posix_only_outside_a_platform_test():
    found = {path.name: calls for path in sorted(LIB.glob("*.py"))
             if (calls := unguarded_posix_calls(ast.parse(path.read_text(encoding="utf-8"))))}
    assert found == {}, "guard these with a platform test (sys.platform, os.name, WINDOWS/LINUX/POSIX)"


def test_the_scan_finds_what_it_looks_for():
    sample = ("import fcntl\nos.killpg(1, 9)\nsubprocess.run('ls', shell=True)\nopen('/proc/self/status')\n"
              "if sys.platform == 'linux':\n    os.killpg(1, 9)\nx = os.fork() if LINUX else None\n")
    assert [what for _, what in unguarded_posix_calls(ast.parse(sample))] == [
        "fcntl", "killpg", "shell=True", "/proc/self/status"]


# --- the Windows-only paths, as functions -------------------------------------------------------------------


@pytest.mark.parametrize("code, words", [
    (3221225477, "an access violation"),  # 0xC0000005, as Python reports it on Windows
    (0xC000013A, "Ctrl-C or the console closed"),
    (0xC0000409, "a stack buffer overrun"),
])
def test_windows_exit_codes_are_named(code, words):
    described = describe_exit(code, "training process")
    assert words in described and f"0x{code & 0xFFFFFFFF:08X}" in described
    assert set(WINDOWS_EXITS) >= {0xC0000005, 0xC000013A, 0xC0000409}


def test_several_processes_are_refused_on_windows_until_tested_there(monkeypatch, tmp_path):
    cfg = load_config(EMBEDDED, {"run_dir": str(tmp_path / "run"), "num_processes": 2})
    assert preflight.check_device(cfg)[0] == "cpu"  # Linux: allowed
    monkeypatch.setattr(preflight, "WINDOWS", True)
    with pytest.raises(RuntimeError, match="num_processes is 2: several processes through torchrun have not been "
                                           "tested on Windows"):
        preflight.check_device(cfg)


def test_keep_awake_is_a_no_op_here_and_says_so():
    with keep_awake.keep_awake() as state:
        assert state == "not needed (not Windows)"


def test_keep_awake_asks_windows_and_lets_go(monkeypatch):
    calls = []

    class Kernel32:
        def SetThreadExecutionState(self, flags):  # noqa: N802 (Windows' own name)
            calls.append(flags)
            return 0x80000000

    monkeypatch.setattr(keep_awake.sys, "platform", "win32")
    monkeypatch.setitem(sys.modules, "ctypes", type("ctypes", (), {"windll": type("windll", (), {
        "kernel32": Kernel32()})}))
    with keep_awake.keep_awake() as state:
        assert state.startswith("held by lib.execute")
        assert calls == [keep_awake.ES_CONTINUOUS | keep_awake.ES_SYSTEM_REQUIRED]
    assert calls[-1] == keep_awake.ES_CONTINUOUS  # released at the end


def test_a_missing_git_fails_an_official_preflight_and_warns_any_other(monkeypatch, tmp_path):
    monkeypatch.setattr(preflight, "describe_repository", lambda run_dir=None: {
        "commit": preflight.UNKNOWN_COMMIT, "dirty": None, "status": "", "diff_sha256": None})
    official = load_config(None, {"run_dir": "submission_runs/m44_v9"})
    other = load_config(EMBEDDED, {"run_dir": str(tmp_path / "run")})
    assert preflight.check_repository(official, tmp_path).status == "fail"
    warned = preflight.check_repository(other, tmp_path)
    assert warned.status == "warn" and "git cannot name the commit" in warned.detail


def test_git_present_passes_naming_the_commit(tmp_path):
    result = preflight.check_repository(load_config(EMBEDDED, {"run_dir": str(tmp_path / "run")}), tmp_path)
    assert result.status == "pass" and re.match(r"commit [0-9a-f]{12}, ", result.detail)


# --- make's targets, as PowerShell commands ------------------------------------------------------------------------


def test_every_make_target_has_its_powershell_line_and_each_line_names_what_exists():
    """docs/WINDOWS.md's table: one row per Makefile target, and every module, script, profile and requirements file
    a row names is in the repository (a renamed module fails here, not on the user's machine)."""
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
    page = (REPO_ROOT / "docs" / "WINDOWS.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `make ([a-z-]+)[^`]*` \| (.+) \|$", page, re.M))
    assert set(rows) == targets, f"rows missing: {targets - set(rows)}; rows for no target: {set(rows) - targets}"
    named = " ".join(rows.values())
    for module in re.findall(r"-m ((?:lib|tools)\.\w+)", named):
        assert (REPO_ROOT / (module.replace(".", "/") + ".py")).is_file(), module
    for path in re.findall(r"(?:params|bench)\\[\w.-]+|requirements[\w-]*\.txt", named):
        assert (REPO_ROOT / path.replace("\\", "/")).is_file(), path
    assert "&&" not in named and "export " not in named  # Windows PowerShell 5.1 has neither
