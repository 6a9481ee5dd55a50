"""What a student leaves behind outside its scratch folder, found and removed (user layer).

Guarantee: after each question, files and folders the student user owns at the top of every
world-writable folder (found by one bounded walk of the file system per run, plus the usual ones) and
its SysV IPC objects are removed, and listed for staff (the first names, the rest counted). The removal
never recurses on a tree's depth (coreutils' rm walks it), never raises, and is bounded in time and
memory: past its bound the grade stands, staff are told, and the next run sweeps again before any
student code runs, refusing if it cannot finish. Relies on: no process of the student being alive when
the sweep runs (the jail proves that first), so nothing can race the removal; in the namespace layer
the student's /tmp and /dev/shm are private and die with it, so there is nothing to sweep.
"""
from __future__ import annotations

import os
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from grader.text import printable

# Folders any user may write to on common systems; the full list is found by walking the file system.
KNOWN_SHARED = tuple(Path(p) for p in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock", "/dev/mqueue"))
WALK_SECONDS = 60.0  # a bound on the search for world-writable folders
SWEEP_SECONDS = 60.0  # a bound on removing what the student left, each time
REMOVE_CHUNK = 1000  # paths given to one rm
LISTED = 5  # removed paths named in the question's output; the rest are counted


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


@dataclass
class Swept:
    """What a sweep removed (the first names, for staff, and how many in all), and whether it finished."""

    names: list[str] = field(default_factory=list)
    count: int = 0
    complete: bool = True


def remove_trees(paths: list[Path], deadline: float) -> bool:
    """Remove each path and everything under it, without following a link or crossing into another file
    system, by coreutils' rm (iterative: no depth breaks it); True when all are gone before `deadline`.
    Without root, a folder its owner closed (mode 000) stops rm: such folders left over are opened up to
    their owner (chmod -R, iterative too, following no link) and removed again. Never raises: what is past
    the bound is left for the caller to report."""
    rm = ["rm", "-rf", "--one-file-system", "--"]
    _run_chunks(rm, paths, deadline)
    closed = [p for p in paths if _is_folder(p)] if os.geteuid() != 0 else []
    if closed and _run_chunks(["chmod", "-R", "u+rwX", "--"], closed, deadline):
        _run_chunks(rm, closed, deadline)
    return not any(os.path.lexists(p) for p in paths)


def _is_folder(path: Path) -> bool:
    """A folder itself, not a link to one (chmod would follow a link named on its command line)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _run_chunks(command: list[str], paths: list[Path], deadline: float) -> bool:
    """`command` on `paths`, REMOVE_CHUNK of them at a time, by `deadline`; False when it ran out of time."""
    for start in range(0, len(paths), REMOVE_CHUNK):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        try:
            subprocess.run([*command, *map(str, paths[start:start + REMOVE_CHUNK])], stdin=subprocess.DEVNULL,
                           capture_output=True, check=False, timeout=left)
        except (OSError, subprocess.SubprocessError):
            return False
    return True


def sweep(folders: list[Path], uid: int, gid: int | None, deadline: float) -> Swept:
    """Remove what the user (or its group) left at the top of `folders`, by `deadline`. The folders are read
    as streams and removed in chunks, so a flood of entries costs bounded memory; a pass that removed
    anything is followed by another (a folder read while it changes may skip entries)."""
    swept = Swept()
    for folder in folders:
        again = True
        while again and swept.complete:
            again = False
            try:
                with os.scandir(folder) as entries:
                    chunk: list[Path] = []
                    for entry in entries:
                        if time.monotonic() > deadline:
                            swept.complete = False
                            break
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except OSError:
                            continue
                        if st.st_uid != uid and st.st_gid != gid:
                            continue
                        chunk.append(Path(entry.path))
                        if len(chunk) == REMOVE_CHUNK:
                            swept.complete = _removed(chunk, swept, deadline)
                            again, chunk = True, []
                            if not swept.complete:
                                break
                    if chunk and swept.complete:
                        swept.complete = _removed(chunk, swept, deadline)
                        again = True
            except OSError:
                continue
    return swept


def _removed(chunk: list[Path], swept: Swept, deadline: float) -> bool:
    done = remove_trees(chunk, deadline)
    gone = [p for p in chunk if not os.path.lexists(p)]
    swept.count += len(gone)
    swept.names += [printable(p, name=True) for p in gone[:LISTED - len(swept.names)]]
    return done


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
                try:
                    subprocess.run(["ipcrm", flag, str(ident)], capture_output=True, check=False, timeout=10)
                except (OSError, subprocess.SubprocessError):
                    continue
                removed.append(f"SysV {kind} {ident}")
    return removed
