"""Reading /proc: which processes belong to the student, in what state, and whether they are gone.

Guarantee: every process count the grader acts on comes from here, read fresh from the kernel each time,
never from what a process says of itself (its name or command line count for nothing but descriptions).
A process is the student's by its uids, its PID namespace, or (process layer) its session, its place in
the grader's tree and the run's environment marker. Relies on: /proc mounted with every process visible
to the grader (root, or the grader's own user in the process layer).
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from grader.text import printable

PF_EXITING = 0x4  # /proc/<pid>/stat flags: the process is in exit() and never runs its own code again
SIGKILL_BIT = 1 << (signal.SIGKILL - 1)  # in the pending-signal masks of /proc/<pid>/status
EXIT_SECONDS = 60.0  # how long killed processes may take to finish exiting (hundreds of big ones take seconds)


def pids() -> list[str]:
    return [p for p in os.listdir("/proc") if p.isdigit()]


def status_uids(pid: str) -> tuple[str, list[int]] | None:
    """(state, [real, effective, saved, fs uid]) of a process."""
    try:
        with open(f"/proc/{pid}/status") as f:
            state, uids = "", []
            for line in f:
                if line.startswith("State:"):
                    state = line.split()[1]
                elif line.startswith("Uid:"):
                    uids = [int(u) for u in line.split()[1:5]]
                    break
            return state, uids
    except (OSError, ValueError):
        return None


def user_processes(uid: int) -> list[int]:
    """Live (not zombie) processes with `uid` as any of their uids."""
    found = []
    for pid in pids():
        info = status_uids(pid)
        if info and info[0] != "Z" and uid in info[1]:
            found.append(int(pid))
    return found


def user_tasks(uid: int) -> int:
    """Processes and threads whose real uid is `uid`: what the kernel holds to that user's RLIMIT_NPROC."""
    count = 0
    for pid in pids():
        try:
            with open(f"/proc/{pid}/status") as f:
                fields = dict(line.split(":", 1) for line in f if line.startswith(("Uid:", "Threads:")))
            if int(fields["Uid"].split()[0]) == uid:
                count += int(fields["Threads"])
        except (OSError, KeyError, ValueError, IndexError):
            continue
    return count


def namespace_processes(ns: tuple[int, int]) -> list[int]:
    """Live processes in the PID namespace (device, inode)."""
    found = []
    for pid in pids():
        try:
            st = os.stat(f"/proc/{pid}/ns/pid")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == ns and (info := status_uids(pid)) and info[0] != "Z":
            found.append(int(pid))
    return found


def process_stat(pid: str) -> tuple[int, int, str, int] | None:
    """(parent pid, session id, state, flags) from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[1]), int(fields[3]), fields[0], int(fields[6])
    except (OSError, IndexError, ValueError):
        return None


def _has_marker(pid: str, marker: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f"GRADER_SANDBOX={marker}".encode() in f.read().split(b"\0")
    except OSError:
        return False


def session_processes(session: int, marker: str) -> list[int]:
    """Process mode: the child's session, every descendant of the grader (a subreaper, so orphans stay in
    its tree even after a setsid), and anything carrying the run's environment marker."""
    me = os.getpid()
    stats = {int(pid): st for pid in pids() if int(pid) != me and (st := process_stat(pid)) is not None and st[2] != "Z"}
    found = set()
    for pid, (_, sid, _, _) in stats.items():
        chain, seen = pid, set()
        while chain in stats and chain not in seen and chain != me:
            seen.add(chain)
            chain = stats[chain][0]
        if sid == session or chain == me or _has_marker(str(pid), marker):
            found.add(pid)
    return sorted(found)


def describe(pid: int) -> str:
    """State, parent and command of a process, for staff."""
    info, st = status_uids(str(pid)), process_stat(str(pid))
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()[:60].replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        command = "?"
    return printable(f"state {info[0] if info else '?'}, doomed {doomed(pid)}, parent {st[0] if st else '?'}, "
                     f"uids {info[1] if info else '?'}: {command.strip()}", name=True)


def doomed(pid: int) -> bool:
    """True once a process can never run its own code again: it is in exit(), or a SIGKILL is pending for
    it (handled before any return to user space; with hundreds of processes on two cores, some wait
    seconds for the CPU time to die), or it is gone."""
    st = process_stat(str(pid))
    if st is None or st[3] & PF_EXITING:
        return True
    try:
        with open(f"/proc/{pid}/status") as f:
            pending = [int(line.split()[1], 16) for line in f if line.startswith(("SigPnd:", "ShdPnd:"))]
        return any(mask & SIGKILL_BIT for mask in pending)
    except (OSError, IndexError, ValueError):
        return True


def reap_orphans(spare: int) -> None:
    """Collect the exit status of dead processes reparented to the grader (a subreaper), except `spare`."""
    me = os.getpid()
    for pid in pids():
        st = process_stat(pid)
        if st is not None and st[0] == me and st[2] == "Z" and int(pid) != spare:
            try:
                os.waitpid(int(pid), os.WNOHANG)
            except ChildProcessError:
                pass


def user_gone(uid: int) -> bool:
    """True once no process of `uid` is left. Killed ones still exiting (a probe's namespace init that its
    parent's death killed, say) run no code of their own: they get EXIT_SECONDS to be gone. False at once
    while one still runs its own code."""
    deadline = time.monotonic() + EXIT_SECONDS
    while alive := user_processes(uid):
        if not all(doomed(pid) for pid in alive) or time.monotonic() > deadline:
            return False
        reap_orphans(spare=-1)
        time.sleep(0.02)
    return True
