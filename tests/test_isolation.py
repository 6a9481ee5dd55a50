"""Attacks and accidents that isolation must absorb: network, signals, leftovers, memory, forged results.

Tests marked `user_mode` need the separate-user isolation (root, and a Python that other users can run,
as in CI's `make test PYTHON=/usr/bin/python3`); they skip with the reason otherwise.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import textwrap
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO, by_question, config_with, grade, make_reference, write_submission
from grader.sandbox import DEFAULT_USER, prepare

SANDBOX = prepare("auto")
user_mode = pytest.mark.skipif(SANDBOX.mode != "user", reason=SANDBOX.note)

VALID_SCORES = """
def scores(images):
    return images.flatten(1)[:, :10]
"""


def grade_q1(tmp_path: Path, code: str, *extra: str, n: int = 20) -> tuple[int, dict]:
    submission = write_submission(tmp_path / "submission", code + VALID_SCORES)
    data = make_reference(tmp_path / "data", n_q1=n)
    return grade(submission, data, tmp_path / "results" / "results.json", "--config",
                 str(config_with(tmp_path, "q1")), *extra)


def test_no_network_not_even_loopback(tmp_path: Path) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(15)
    port = server.getsockname()[1]
    accepted: list = []

    def serve() -> None:
        try:
            accepted.append(server.accept())
        except OSError:
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    code = f"""
import socket
def predict_q1(images):
    socket.create_connection(("127.0.0.1", {port}), timeout=5).sendall(b"labels please")
    return scores(images)
"""
    _, report = grade_q1(tmp_path, code)
    server.close()
    thread.join(timeout=20)
    assert accepted == []
    assert "PermissionError" in by_question(report)["Q1"]["output"]
    assert report["extra_data"]["metrics"]["q1"]["error"].startswith("predict_q1 raised PermissionError")


def test_cannot_signal_the_grader(tmp_path: Path) -> None:
    received: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: received.append(signum))
    code = """
import ctypes, os, signal
blocked = []
for target in (os.getppid(), -os.getpgid(os.getppid())):
    try:
        os.kill(target, signal.SIGUSR1)
    except PermissionError:
        blocked.append(target)
if ctypes.CDLL(None).sigqueue(os.getppid(), int(signal.SIGUSR1), 0) != 0:  # rt_sigqueueinfo
    blocked.append("sigqueue")
print("blocked", len(blocked))
def predict_q1(images):
    return scores(images)
"""
    try:
        rc, report = grade_q1(tmp_path, code)
        time.sleep(0.5)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert received == []
    assert rc == 0 and report["extra_data"]["metrics"]["q1"]["n"] == 20
    assert "blocked 3" in by_question(report)["Q1"]["output"]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _uid(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def test_left_behind_processes_are_killed(tmp_path: Path) -> None:
    code = """
import subprocess, sys
daemon = subprocess.Popen(["sleep", "300"], start_new_session=True)  # escapes the process group
child = subprocess.Popen(["sleep", "301"])
print("PIDS", daemon.pid, child.pid)
def predict_q1(images):
    return scores(images)
"""
    rc, report = grade_q1(tmp_path, code)
    output = by_question(report)["Q1"]["output"]
    pids = [int(p) for p in output.split("PIDS ", 1)[1].split()[:2]]
    assert rc == 0 and report["extra_data"]["metrics"]["q1"]["n"] == 20
    assert not any(_alive(pid) for pid in pids)
    assert "2 process(es) your code left running were stopped" in output


def test_memory_limit(tmp_path: Path) -> None:
    code = """
import time
def predict_q1(images):
    hog = bytearray(700 * 2**20)
    time.sleep(20)
    return scores(images)
"""
    started = time.monotonic()
    _, report = grade_q1(tmp_path, code, "--memory-limit", "400")
    assert time.monotonic() - started < 20
    message = report["extra_data"]["metrics"]["q1"]["error"]
    assert message.startswith("Memory limit exceeded: predict_q1's processes used") and "(limit 400 MiB)" in message
    assert by_question(report)["Q1"]["score"] == 0


def test_forged_results_are_replaced(tmp_path: Path) -> None:
    results = tmp_path / "results" / "results.json"
    forged = json.dumps({"tests": [{"name": "Q1", "score": 1000, "max_score": 20}], "score": 1000})
    code = f"""
import os
def predict_q1(images):
    for path in ({str(results)!r}, {str(results.parent / "extra.json")!r}):
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write({forged!r})
        except OSError as exc:
            print("refused:", type(exc).__name__)
    return scores(images)
"""
    rc, report = grade_q1(tmp_path, code)
    assert rc == 0 and "score" not in report
    assert all(t["score"] <= t["max_score"] for t in report["tests"])


def test_cuda_asked_for_but_missing(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    submission = write_submission(tmp_path / "submission", "def predict_q1(images):\n    return images\n")
    data = make_reference(tmp_path / "data", n_q1=5)
    rc, report = grade(submission, data, tmp_path / "results.json", "--config", str(config_with(tmp_path, "q1")),
                       "--device", "cuda")
    assert rc == 2  # a set-up problem, not the student's
    assert "grader problem, not yours: CUDA was asked for (--device cuda), but torch sees no CUDA device" in \
        report["extra_data"]["metrics"]["q1"]["error"]


def test_without_root_the_grader_says_so(tmp_path: Path) -> None:
    _, report = grade_q1(tmp_path, "def predict_q1(images):\n    return scores(images)\n", "--isolation", "process")
    assert "needs root, as in the Docker image or on Gradescope" in report["output"]


@user_mode
def test_labels_config_and_grader_are_closed_to_student_code(tmp_path: Path) -> None:
    data = tmp_path / "data"
    targets = [data / "q1" / "labels.npy", tmp_path / "config.toml", REPO / "grader" / "scoring.py"]
    code = f"""
import pwd, os
print("running as", pwd.getpwuid(os.getuid()).pw_name)
for path in {[str(t) for t in targets]!r}:
    try:
        open(path, "rb").read(10)
        print("READ", path)
    except PermissionError:
        print("refused", path)
try:
    open({str(REPO / "grader" / "scoring.py")!r}, "a").write("# planted")
    print("WROTE grader")
except PermissionError:
    print("refused write")
def predict_q1(images):
    return scores(images)
"""
    rc, report = grade_q1(tmp_path, code)
    output = by_question(report)["Q1"]["output"]
    assert f"running as {DEFAULT_USER}" in output
    assert "READ" not in output and "WROTE" not in output
    assert output.count("refused") == 4
    assert rc == 0 and report["extra_data"]["metrics"]["q1"]["n"] == 20
    assert "# planted" not in (REPO / "grader" / "scoring.py").read_text()
    # Modes are restored after grading.
    assert (REPO / "grader").stat().st_mode & 0o005 == 0o005


@user_mode
def test_files_left_in_shared_temp_folders_are_removed(tmp_path: Path) -> None:
    planted = Path("/tmp") / f"planted-{os.getpid()}"
    code = f"""
open({str(planted)!r}, "w").write("still here?")
def predict_q1(images):
    return scores(images)
"""
    rc, report = grade_q1(tmp_path, code)
    assert rc == 0 and report["extra_data"]["metrics"]["q1"]["n"] == 20
    assert not planted.exists()
    assert f"Removed what your code left in shared temp folders: {planted}" in by_question(report)["Q1"]["output"]


@user_mode
def test_fork_bomb_is_contained(tmp_path: Path) -> None:
    code = """
import os, time
def predict_q1(images):
    for _ in range(100_000):
        try:
            os.fork()
        except OSError:
            time.sleep(0.01)
    return scores(images)
"""
    started = time.monotonic()
    rc, report = grade_q1(tmp_path, code, "--timeout", "8")
    assert time.monotonic() - started < 8 + 15
    assert "Time limit exceeded" in report["extra_data"]["metrics"]["q1"]["error"]
    assert by_question(report)["Q1"]["score"] == 0
    assert not [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc"))) if _alive(pid) and _uid(pid) == SANDBOX.uid]


def test_submission_cannot_shadow_the_childs_imports_or_run_before_the_filter(tmp_path: Path) -> None:
    marker = tmp_path / "shadow-ran"
    shadow = f"open({str(marker)!r}, 'w').write('ran')\nraise SystemExit(0)\n"
    code = """
def predict_q1(images):
    status = open("/proc/self/status").read()
    print([line for line in status.splitlines() if line.startswith("Seccomp:")])
    return scores(images)
"""
    submission = write_submission(tmp_path / "submission", code + VALID_SCORES, **{"numpy.py": shadow, "torch.py": shadow})
    data = make_reference(tmp_path / "data", n_q1=10)
    rc, report = grade(submission, data, tmp_path / "results.json", "--config", str(config_with(tmp_path, "q1")))
    assert rc == 0 and report["extra_data"]["metrics"]["q1"]["n"] == 10
    assert not marker.exists()
    assert "['Seccomp:\\t2']" in by_question(report)["Q1"]["output"]  # 2 = filter mode


def test_a_daemon_holding_the_channel_open_cannot_stall_grading(tmp_path: Path) -> None:
    code = """
import os
pid = os.fork()
if pid == 0:  # inherits every pipe, leaves the session, drops the environment marker
    os.setsid()
    os.execve("/bin/sleep", ["sleep", "300"], {})
print("DAEMON", pid)
def predict_q1(images):
    return scores(images)
"""
    started = time.monotonic()
    rc, report = grade_q1(tmp_path, code, "--timeout", "30")
    assert time.monotonic() - started < 30
    assert rc == 0 and report["extra_data"]["metrics"]["q1"]["n"] == 20
    pid = int(by_question(report)["Q1"]["output"].split("DAEMON ", 1)[1].split()[0])
    assert not _alive(pid)


CHANNEL_ATTACKS = {
    "closes_channel_and_waits": ("os.close(FD)\ntime.sleep(1000)",
                                 "closed its channel to the grader (0 of 20 images done) but kept running"),
    "deeply_nested_json": ("os.write(FD, b'[' * 60000 + b'\\n')\ntime.sleep(1000)", "malformed data: RecursionError"),
    "huge_npy_header": ("os.write(FD, b'{\"type\": \"batch\", \"start\": 0, \"count\": 20}\\n' + b'\\x93NUMPY\\x02\\x00'"
                        " + (2**30).to_bytes(4, 'little'))\ntime.sleep(1000)", "malformed data: unsupported .npy version (2, 0)"),
    "second_ready": ("os.write(FD, b'{\"type\": \"ready\"}\\n')\ntime.sleep(1000)", "unexpected 'ready' message"),
}


@pytest.mark.parametrize("attack", sorted(CHANNEL_ATTACKS))
def test_attacks_on_the_channel_end_in_a_clear_error(tmp_path: Path, attack: str) -> None:
    action, message = CHANNEL_ATTACKS[attack]
    code = f"""
import json, os, sys, time
FD = json.loads(sys.argv[1])["fd"]
def predict_q1(images):
{textwrap.indent(action, "    ")}
"""
    started = time.monotonic()
    rc, report = grade_q1(tmp_path, code, "--timeout", "20")
    assert time.monotonic() - started < 20
    assert rc == 0
    assert message in report["extra_data"]["metrics"]["q1"]["error"]


def test_odd_characters_from_the_student_keep_results_valid(tmp_path: Path, capsys) -> None:
    code = "def predict_q1(images):\n    raise ValueError('bad \\ud800 value')\n"
    rc, report = grade_q1(tmp_path, code)
    assert rc == 0
    assert "raised ValueError: bad ? value" in report["extra_data"]["metrics"]["q1"]["error"]
    (tmp_path / "results" / "results.json").read_text(encoding="utf-8")
    assert "Total:" in capsys.readouterr().out
