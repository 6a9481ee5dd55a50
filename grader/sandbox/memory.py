"""Memory of the student's processes counted the processes' way, where no memory cgroup can be had
(default Docker, Gradescope): the user layer's accounting, beside cgroup.py, which is the kernel's.

Guarantee: what a cgroup would charge is counted: resident anonymous and shared memory of every process
found (proportional shares once the cheap sum passes the limit, so forked copies count once) and their
page tables; memfd files and pipes they hold open (a pipe at its default capacity, which may count an
empty one high and one enlarged with F_SETPIPE_SZ low, within the kernel's per-user soft limit of 64 MiB
of such pipes); and the tmpfs space they fill (their private /tmp and /dev/shm in the namespace layer; the
growth of the shared tmpfs folders in the user layer). Relies on: the member list of procfs.py, and a
check often enough (the runner's): a very fast allocation can overshoot between two checks, and other
kernel memory (sockets' buffers, in-kernel caches) is not counted here.
"""
from __future__ import annotations

import os
import time

from grader.sandbox.cleanup import KNOWN_SHARED


PIPE_BYTES = 64 * 2**10  # what a pipe's buffer holds by default (16 pages); counted for each pipe held open


def resident_bytes(pid: int | str) -> int:
    """Resident anonymous and shared memory (RssAnon + RssShmem) and page tables (VmPTE): what a memory
    cgroup charges and cannot reclaim. Pages of files mapped from disk (the libraries: over 300 MiB for
    CUDA builds of torch) are left out, as the cgroup's count leaves them out: the kernel can drop and
    reread them. Page tables count: a process that maps much and touches little holds gigabytes of them."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return sum(int(line.split()[1]) * 1024 for line in f if line.startswith(("RssAnon:", "RssShmem:", "VmPTE:")))
    except (OSError, IndexError, ValueError):
        return 0


def _pss(pid: int) -> int:
    """The proportional share of the same (where the kernel lacks the split: the resident sum)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            parts = [int(line.split()[1]) * 1024 for line in f if line.startswith(("Pss_Anon:", "Pss_Shmem:"))]
    except (OSError, ValueError):
        parts = []
    return sum(parts) + _page_tables(pid) if len(parts) == 2 else resident_bytes(pid)


def _page_tables(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return sum(int(line.split()[1]) * 1024 for line in f if line.startswith("VmPTE:"))
    except (OSError, IndexError, ValueError):
        return 0


def memory_bytes(pids: list[int], limit: int, deadline: float) -> int:
    """Anonymous and shared memory of these processes together, never overestimated. The cheap sum counts
    pages that forked processes share once per process; only when it exceeds `limit` is the fair (and
    slow) sum of proportional set sizes taken, where shared pages count once. That sum stops early at
    `limit` or at `deadline` (time.monotonic()), so a fork bomb cannot stall the time limit."""
    resident = sum(resident_bytes(pid) for pid in pids)
    if resident <= limit:
        return resident
    pss = 0
    for pid in pids:
        pss += _pss(pid)
        if pss > limit or time.monotonic() > deadline:
            break
    return pss


def descriptor_bytes(pids: list[int], deadline: float) -> int:
    """Memory held through file descriptors, which no resident set shows: memfd files (their size) and pipes
    (PIPE_BYTES each: the kernel keeps pipe buffers for the user, 1.25 GiB of them from 8 processes once,
    and the fd limit alone bounds them only loosely). Each file counts once, however many hold it."""
    seen, total = set(), 0
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            if time.monotonic() > deadline:
                return total
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if not target.startswith(("/memfd:", "pipe:")):
                    continue
                st = os.stat(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += PIPE_BYTES if target.startswith("pipe:") else st.st_blocks * 512
    return total


def used_bytes(folder: str) -> int:
    """Bytes used on the file system holding `folder` (a tmpfs: memory)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return 0
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def tmpfs_devices() -> set[int]:
    """Device numbers of every tmpfs mount."""
    devices = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            if right.split()[0] == "tmpfs":
                try:
                    devices.add(os.stat(left.split()[4]).st_dev)
                except OSError:
                    pass
    return devices


def shared_tmpfs_used(devices: set[int]) -> dict[int, int]:
    """Bytes used now on each of the world-writable tmpfs folders among `devices`."""
    if not devices:
        return {}
    used = {}
    for folder in KNOWN_SHARED:
        try:
            dev = os.stat(folder).st_dev
        except OSError:
            continue
        if dev in devices:
            used[dev] = used_bytes(str(folder))
    return used
