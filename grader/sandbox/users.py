"""The unprivileged users of the user layer: the student user that runs student code, the killer user
that ends it, and the lock that gives one grading run at a time each student user.

Guarantee: student code never runs as root: launch.py drops every id and group before exec. Every process
of the student user can be killed, from a process it cannot signal back (killer.py). Only one grading
run uses a student user at a time, so one run's cleanup, which kills every process of that user, never
touches another run's. Relies on: root, and users created with no home, no shell and a group of their own.
"""
from __future__ import annotations

import fcntl
import json
import os
import pwd
import subprocess
import sys
import time
from pathlib import Path

from grader.sandbox.errors import SandboxError
from grader.sandbox.procfs import doomed, user_processes

DEFAULT_USER = "grader-student"
KILLER_USER = "grader-killer"
HERE = Path(__file__).resolve().parent
LAUNCH, KILLER = HERE / "launch.py", HERE / "killer.py"
LOCK_FOLDER = Path("/run")  # mp-grader-USER.lock: one run at a time per student user
KILL_SECONDS = 5.0  # how long the grader tries to kill and then waits to see every process gone


def ensure_user(name: str) -> tuple[int, int]:
    """(uid, gid) of a system user with a group of its own, created on first use."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", name], check=True, capture_output=True)
        entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


def launch_argv(options: dict, program: list[str]) -> list[str]:
    """`program` started through launch.py, which joins the cgroup and drops to the uid/gid in `options`."""
    return [sys.executable, "-I", "-S", str(LAUNCH), json.dumps(options), "--", *program]


def kill_user(uid: int, killer: tuple[int, int]) -> list[int]:
    """SIGKILL every process of `uid` and return those still alive after KILL_SECONDS; each round of
    killer.py (run as the `killer` user) is bounded too, so a stuck kill cannot hang the grader."""
    deadline = time.monotonic() + KILL_SECONDS
    while (alive := [p for p in user_processes(uid) if not doomed(p)]) and time.monotonic() < deadline:
        try:
            subprocess.run([sys.executable, "-I", "-S", str(KILLER), str(uid), *map(str, killer), "3"],
                           env={}, stdin=subprocess.DEVNULL, capture_output=True, check=False, timeout=KILL_SECONDS)
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.02)
    return alive


def state_file(name: str, kind: str) -> Path:
    """A root-only file of the grader's, mp-grader-NAME.KIND, in /run (else beside the grader)."""
    return (LOCK_FOLDER if LOCK_FOLDER.is_dir() else HERE.parent) / f"mp-grader-{name}.{kind}"


def open_lock(name: str) -> int:
    """The lock file mp-grader-NAME.lock, opened for flock."""
    return os.open(state_file(name, "lock"), os.O_RDWR | os.O_CREAT, 0o600)


def take_lock(user: str) -> int:
    """One grading run at a time per student user (the cleanup kills every process of that user): the held
    lock's descriptor, released by closing it or by the kernel when the grader dies."""
    fd = open_lock(user)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SandboxError(f"another grading run is using the user '{user}'; two at once would kill each "
                           "other's processes. Wait for it to finish.") from None
    return fd
