"""The time limit beside other runs: judged on the question's CPU time, the kernel's count over its whole
process tree, with a wall-clock guard (grader/time_limit.py). A run stopped by something else on the
machine keeps its time; a student's processes cannot hide CPU time from the count; a run that only waits
ends at the guard. Alone, a run is judged on the wall clock, as before."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import LAYERS, config_with, grade, make_reference, unavailable, write_submission
from grader.sandbox import question_cpus
from grader.sandbox.cgroup import QuestionCgroup, cgroup_parent, cpu_time_counted
from grader.time_limit import WALL_GUARD, cpu_allowance, wall_guard
from test_isolation import error, grade_q1, student_processes


def test_a_run_that_keeps_its_cap_busy_is_judged_on_its_wall_time_at_the_cap() -> None:
    for cap in (0.25, 0.5, 1.0, 1.5, 4.0):
        # Busy at its cap for exactly its limit, a run has used exactly its allowance; the guard gives it twice that.
        assert cpu_allowance(25, cap) == 25 * cap
        assert wall_guard(25, cap) == WALL_GUARD * 25 == 50
    assert wall_guard(25, None) == 25  # alone, the wall clock


BURN = """
import os, time
def burn(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
if os.fork() == 0:  # a child whose time its parent never collects: the group counts it still
    burn(0.5)
    os._exit(0)
burn(0.5)
time.sleep(0.2)
"""


def _writable_groups() -> list[tuple[Path, int]]:
    """Where a group that counts CPU time can be made here: v1's cpuacct hierarchy, and any cgroup2 one."""
    found = []
    if not isinstance(where := cgroup_parent("cpuacct"), str):
        found.append(where)
    own = next(line.split("::", 1)[1].strip() for line in open("/proc/self/cgroup") if line.startswith("0::"))
    for line in open("/proc/self/mountinfo"):
        if line.split(" - ", 1)[1].startswith("cgroup2 "):
            folder = Path(line.split()[4]) / own.lstrip("/")
            if os.access(folder, os.W_OK) and (folder / "cpu.stat").exists():
                found.append((folder, 2))
    return found


def test_each_cgroup_version_counts_the_time_of_a_whole_process_tree() -> None:
    """The two readings (v1 cpuacct.usage, v2 cpu.stat) against a real kernel: a process and a child that
    exits unreaped burn 0.5 s of CPU each; the group has counted about 1 s."""
    groups = _writable_groups()
    if not groups:
        pytest.skip("no cgroup here that counts CPU time and that this user may make")
    for base, version in groups:
        group = QuestionCgroup.make(base, version, {}, {})
        try:
            join = lambda: group.procs_file.write_text(str(os.getpid()))  # noqa: E731
            subprocess.run([sys.executable, "-c", BURN], preexec_fn=join, check=True, timeout=30)
            used = group.cpu_seconds()
            assert used is not None and 0.9 <= used < 3, (version, used)
        finally:
            group.remove()


@pytest.fixture(params=sorted(LAYERS))
def capped(request) -> str:
    """A strong layer where a run capped beside another (CAPPED) is judged on CPU time."""
    reason = unavailable(request.param)
    if reason:
        pytest.skip(reason)
    where = cgroup_parent("cpu")
    if isinstance(where, str) or not cpu_time_counted(where):
        pytest.skip(f"the kernel counts no question's CPU time here: {where}")
    return request.param


CAPPED = ("--cpu-share", "2")


WORK = """
import torch
torch.manual_seed(0)
M = torch.randn(784, 784) / 28
def predict_q1(images):
    x = images.flatten(1)
    for _ in range(150):  # a second or two of CPU time
        x = torch.tanh(x @ M)
    return x[:, :10]
"""


def _running_child() -> bool:
    for pid in student_processes():
        try:
            if b"child.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
        except OSError:
            pass
    return False


def signal_if_alive(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _stop_the_student_for(seconds: float) -> threading.Thread:
    """Once the student's child runs, stop all its processes for `seconds` (SIGSTOP: what a machine too
    busy to give them the CPU would do), then let them go on."""

    def run() -> None:
        end = time.monotonic() + 60
        while not _running_child() and time.monotonic() < end:
            time.sleep(0.02)
        time.sleep(1)
        stopped = student_processes()
        for pid in stopped:
            signal_if_alive(pid, signal.SIGSTOP)
        time.sleep(seconds)
        for pid in stopped:  # those the grader killed meanwhile (its wall-clock guard) are gone
            signal_if_alive(pid, signal.SIGCONT)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _grade(tmp_path: Path, flags: tuple[str, ...], stop: float = 0) -> dict:
    submission = write_submission(tmp_path / "submission", WORK)
    data = tmp_path / "data"
    if not data.exists():
        make_reference(data, n_q1=200)
    stopper = _stop_the_student_for(stop) if stop else None
    _, report = grade(submission, data, tmp_path / f"results-{stop}.json", "--timeout", "15", "--config",
                      str(config_with(tmp_path, "q1")), *flags)
    if stopper is not None:
        stopper.join()
    return report


def test_a_run_kept_from_the_cpu_keeps_its_time_limit_and_its_score(tmp_path: Path, capped: str) -> None:
    report = _grade(tmp_path, (*LAYERS[capped], *CAPPED), stop=16)
    q1 = report["tests"][0]
    assert error(report) == "", q1["output"]
    found = re.search(r"held-out images, ([0-9.]+) s, ([0-9.]+) s of CPU time", q1["output"])
    assert found, q1["output"]
    seconds, cpu = map(float, found.groups())
    assert seconds > 16 and cpu < 15, q1["output"]  # past its limit on the wall clock, within it on the CPU
    alone = _grade(tmp_path, (*LAYERS[capped], *CAPPED))["tests"][0]
    assert q1["score"] == alone["score"] and q1["output"].split("\n")[0] == alone["output"].split("\n")[0]
    assert "time: the CPU time of the question's whole process tree" in json.dumps(report)


def test_the_same_stop_costs_a_run_judged_on_the_wall_clock_its_limit(tmp_path: Path) -> None:
    """The contrast: alone (no --cpu-share) the limit is wall-clock time, and the same stop times it out."""
    reason = unavailable("namespace")
    if reason:
        pytest.skip(reason)
    report = _grade(tmp_path, LAYERS["namespace"], stop=16)
    assert error(report).startswith("Time limit exceeded: predict_q1 did not finish within 15 s"), error(report)


HIDDEN_WORKERS = """
import os, signal, time
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children reaped by the kernel at once: no parent counts their time
def burn():
    end = time.process_time() + 0.05
    while time.process_time() < end:
        pass
def predict_q1(images):
    while True:  # short-lived workers in sessions of their own, each gone before anyone could sample it
        for _ in range(4):
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    burn()
                os._exit(0)
        time.sleep(0.01)
"""
SLEEPER = """
import time
def predict_q1(images):
    time.sleep(600)
"""


def test_cpu_time_spent_in_vanished_processes_is_counted(tmp_path: Path, capped: str) -> None:
    """Per-process accounting misses processes the kernel reaps before anyone reads them; the cgroup's
    count keeps every one: the run ends on its CPU time, long before its wall-clock guard."""
    _, report = grade_q1(tmp_path, HIDDEN_WORKERS, capped, "--timeout", "6", *CAPPED)
    cpus = question_cpus(2)
    assert f"CPU seconds, past its limit of {cpu_allowance(6, cpus):g} (6 s at a {cpus:.2f}-CPU cap" in error(report), \
        error(report)


def test_a_run_that_only_waits_ends_at_the_wall_clock_guard(tmp_path: Path, capped: str) -> None:
    started = time.monotonic()
    _, report = grade_q1(tmp_path, SLEEPER, capped, "--timeout", "3", *CAPPED)
    guard = wall_guard(3, question_cpus(2))
    assert error(report).startswith("Time limit exceeded: predict_q1 did not finish within the wall-clock guard of "
                                    f"{guard:g} s, having used only "), error(report)
    assert guard <= time.monotonic() - started < guard + 30
