"""What a student leaves behind outside its scratch folder, found and removed (user layer).

Guarantee: after each question, files and folders the student user owns at the top of every
world-writable folder (found by one bounded walk of the file system per run, plus the usual ones) and
its SysV IPC objects are removed, and listed for staff. Relies on: no process of the student being alive
when the sweep runs (the jail proves that first), so nothing can race the removal; in the namespace
layer the student's /tmp and /dev/shm are private and die with it, so there is nothing to sweep.
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

from grader.text import printable

# Folders any user may write to on common systems; the full list is found by walking the file system.
KNOWN_SHARED = tuple(Path(p) for p in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock", "/dev/mqueue"))
WALK_SECONDS = 60.0  # a bound on the search for world-writable folders


def walk_world_writable(deadline: float) -> tuple[list[Path], bool]:
    """Every folder other users may write to (those where the student can leave files), and whether the walk
    finished before `deadline`. /proc and /sys hold no such folders for files."""
    found: list[Path] = []
    stack = [Path("/")]
    skip = {Path("/proc"), Path("/sys")}
    while stack:
        if time.monotonic() > deadline:
            return found, False
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                if not entry.is_dir(follow_symlinks=False) or Path(entry.path) in skip:
                    continue
                if entry.stat(follow_symlinks=False).st_mode & stat.S_IWOTH:
                    found.append(Path(entry.path))
                stack.append(Path(entry.path))
            except OSError:
                continue
    return found, True


def sweep(folders: list[Path], uid: int, gid: int | None) -> list[str]:
    """Remove what the user (or its group) left at the top of `folders`; returns what was removed."""
    removed = []
    for folder in folders:
        try:
            entries = list(folder.iterdir())
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.lstat()
                if st.st_uid != uid and st.st_gid != gid:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink()
                removed.append(printable(entry, name=True))
            except OSError:
                pass
    return removed


def remove_sysv_ipc(uid: int) -> list[str]:
    """Remove SysV shared memory segments, message queues and semaphores the user owns or created
    (the child's filter refuses to create them; this is the second line)."""
    removed = []
    for kind, flag in (("shm", "-m"), ("msg", "-q"), ("sem", "-s")):
        try:
            lines = Path(f"/proc/sysvipc/{kind}").read_text().splitlines()
        except OSError:
            continue
        columns = lines[0].split() if lines else []
        for line in lines[1:]:
            row = dict(zip(columns, line.split()))
            if str(uid) in (row.get("uid"), row.get("cuid")):
                ident = row.get("shmid") or row.get("msqid") or row.get("semid")
                subprocess.run(["ipcrm", flag, str(ident)], capture_output=True, check=False, timeout=10)
                removed.append(f"SysV {kind} {ident}")
    return removed
