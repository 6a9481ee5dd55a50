"""A memory cgroup per question, where the kernel lets the grader make one (root on a plain machine).

The kernel then counts memory where it is spent, whichever process of the student's spends it: anonymous
memory, and shared memory that no process maps (files in tmpfs or /dev/shm, memfd, SysV segments), which
a sum over the processes' resident sets never sees. Its hard limit is the kernel's backstop behind the
grader's own check, and its member list is exact: a process cannot leave the cgroup (moving needs write
access to a cgroup.procs that root owns). Inside default Docker and on Gradescope the cgroup file system
is read-only: `MemoryCgroup.create` then says why not, and the grader counts memory its other way.
"""
from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from grader.sandbox.memory import resident_bytes

NO_LIMIT = 2**60  # cgroup v1 writes "no limit" as a number near 2**63
MARGIN = 64 * 2**20  # the hard limit sits this far above the grader's own, so the grader's clear message comes first


def _mounts() -> list[tuple[str, str, str]]:
    """(mount point, file system type, super options) of every mount."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            fstype, _, options = right.split()[:3]
            found.append((left.split()[4], fstype, options))
    return found


def _own_path(controller: str) -> str | None:
    """This process's cgroup path in the hierarchy of `controller` ("" for the unified v2 hierarchy)."""
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            wanted = controllers == "" if controller == "" else controller in controllers.split(",")
            if wanted:
                return path
    return None


def read_key(path: Path, key: str) -> int:
    """The number after `key` in a cgroup file of "key value" lines (0 when absent)."""
    for line in path.read_text().splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0


def _hierarchies(controller: str) -> list[tuple[Path, Path | None, int]]:
    """(mount point, this process's folder below it or None, version) of each hierarchy that may hold
    `controller`, v2 first: the one walk of the mounts that making a cgroup and reading a limit share."""
    mounts, found = _mounts(), []
    for point, fstype, _ in mounts:
        if fstype == "cgroup2":
            own = _own_path("")
            found.append((Path(point), None if own is None else Path(point) / own.lstrip("/"), 2))
    for point, fstype, options in mounts:
        if fstype == "cgroup" and controller in options.split(","):
            own = _own_path(controller)
            found.append((Path(point), None if own is None else Path(point) / own.lstrip("/"), 1))
    return found


def enclosing_limit() -> int | None:
    """Bytes the cgroup this process runs in may use (a container's --memory), or None when unlimited.

    Inside a container the cgroup file system shows the container's own cgroup at its mount point; on a
    plain machine the process's own path below it. Either way every limit on the path counts."""
    limits = []
    for point, folder, version in _hierarchies("memory"):
        name = "memory.max" if version == 2 else "memory.limit_in_bytes"
        folders = [folder, *folder.parents] if folder is not None and folder.is_dir() else [point]
        for f in folders:
            try:
                value = (f / name).read_text().strip()
            except OSError:
                pass
            else:
                if value.isdigit() and int(value) < NO_LIMIT:
                    limits.append(int(value))
            if f == point:
                break
    return min(limits, default=None)


def enclosing_cpus(hierarchies: list[tuple[Path, Path | None, int]] | None = None) -> float | None:
    """CPUs' worth of time the cgroup this process runs in may use (a container's --cpus: cgroup v2 cpu.max,
    v1 cpu.cfs_quota_us / cpu.cfs_period_us), the smallest on its path, or None when unlimited."""
    limits = []
    for point, folder, version in _hierarchies("cpu") if hierarchies is None else hierarchies:
        folders = [folder, *folder.parents] if folder is not None and folder.is_dir() else [point]
        for f in folders:
            try:
                if version == 2:
                    quota, _, period = (f / "cpu.max").read_text().partition(" ")
                else:
                    quota, period = (f / "cpu.cfs_quota_us").read_text(), (f / "cpu.cfs_period_us").read_text()
                if quota.strip() not in ("max", "-1") and int(period) > 0:
                    limits.append(int(quota) / int(period))
            except (OSError, ValueError):
                pass
            if f == point:
                break
    return min(limits, default=None)


def memory_left_mib(reserve: int = MARGIN) -> int | None:
    """MiB of the enclosing limit a student's processes may have: what the grader does not already use,
    less `reserve` for what it will (reports, metrics). None when there is no limit."""
    limit = enclosing_limit()
    if limit is None:
        return None
    return max(limit - resident_bytes("self") - reserve, 0) // 2**20


# What shows that a writable hierarchy of version 1 holds a controller.
V1_MARKER = {"memory": "memory.limit_in_bytes", "cpu": "cpu.shares", "cpuacct": "cpuacct.usage"}


def cgroup_parent(controller: str) -> tuple[Path, int] | str:
    """Where a question's cgroup with `controller` can be made (the grader's own cgroup in that hierarchy,
    and its version), or why none can."""
    if os.geteuid() != 0:
        return f"{controller} cgroups need root"
    for _, base, version in _hierarchies(controller):
        if base is None:
            continue
        try:
            if version == 2:
                if controller in (base / "cgroup.subtree_control").read_text().split() and os.access(base, os.W_OK):
                    return base, 2
            elif (base / V1_MARKER[controller]).exists() and os.access(base, os.W_OK):
                return base, 1
        except OSError:
            pass
    return f"no writable {controller} cgroup (cgroup file system read-only or {controller} controller not delegated)"


class QuestionCgroup:
    """One cgroup directory made for a question, in one hierarchy: its member list is exact (a process
    cannot leave: moving needs write access to a cgroup.procs that root owns), and killing all of it is
    one step in v2."""

    def __init__(self, path: Path, version: int):
        self.path, self.version = path, version

    @property
    def procs_file(self) -> Path:
        return self.path / "cgroup.procs"

    @classmethod
    def make(cls, base: Path, version: int, settings: dict[str, str], optional: dict[str, str]) -> "QuestionCgroup":
        """A new cgroup below `base` with `settings` written, and `optional` where the kernel has the file.
        Raises OSError."""
        path = base / f"mp-grader-{secrets.token_hex(6)}"
        path.mkdir(mode=0o755)
        group = cls(path, version)
        try:
            for name, value in settings.items():
                (path / name).write_text(value)
            for name, value in optional.items():
                if (path / name).exists():
                    (path / name).write_text(value)
        except OSError:
            group.remove()
            raise
        return group

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in self.procs_file.read_text().split()]
        except OSError:
            return []

    def cpu_seconds(self) -> float | None:
        """CPU time (user and system) the kernel has charged to the group's processes, the living and the
        gone alike, in seconds; None where this hierarchy does not count it (a v1 hierarchy without cpuacct)."""
        try:
            if self.version == 2:
                return read_key(self.path / "cpu.stat", "usage_usec") / 1e6
            return int((self.path / "cpuacct.usage").read_text()) / 1e9
        except (OSError, ValueError):
            return None

    def kill(self) -> None:
        """SIGKILL every member (v2 in one step; v1 one by one, which the namespace or uid kill backs up)."""
        if self.version == 2 and (self.path / "cgroup.kill").exists():
            (self.path / "cgroup.kill").write_text("1")
            return
        for pid in self.pids():
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass

    def remove(self, timeout: float = 5.0) -> bool:
        """Remove the cgroup once it is empty; False if it could not be removed within `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.path.rmdir()
                return True
            except FileNotFoundError:
                return True
            except OSError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.02)


PERIOD_US = 100_000  # the scheduler's accounting period for a cap (the kernel's default)


def cpu_cap(cpus: float, version: int) -> dict[str, str]:
    """The files that cap a cgroup at `cpus` CPUs' worth of time per period."""
    quota = max(1000, round(cpus * PERIOD_US))  # the kernel's smallest quota is 1 ms
    if version == 2:
        return {"cpu.max": f"{quota} {PERIOD_US}"}
    return {"cpu.cfs_period_us": str(PERIOD_US), "cpu.cfs_quota_us": str(quota)}


class CpuCgroup(QuestionCgroup):
    """One question's CPU scheduling group (v1's cpu controller, or v2's): the kernel's fair scheduler then
    shares the CPU between groups before it shares it between processes, so however many processes (or
    sessions, which escape autogroups) a student starts, a neighbouring question gets its share. The default
    weight, the same for every question; with `cpus`, also a cap, so that a run beside others has the same
    CPU time whether its neighbours are busy or idle. In v2 the memory cgroup, when there is one, is this
    group too."""

    @classmethod
    def create(cls, cpus: float | None = None) -> "CpuCgroup":
        where = cgroup_parent("cpu")
        if isinstance(where, str):
            raise OSError(where)
        group = cls.make(*where, cpu_cap(cpus, where[1]) if cpus else {}, {})
        return cls(group.path, group.version)


class CpuacctCgroup(QuestionCgroup):
    """One question's CPU-time count where cgroup v1 mounts cpuacct apart from cpu (elsewhere the CPU group
    or the v2 group counts it already)."""

    @classmethod
    def create(cls) -> "CpuacctCgroup":
        where = cgroup_parent("cpuacct")
        if isinstance(where, str):
            raise OSError(where)
        group = cls.make(*where, {}, {})
        return cls(group.path, group.version)


def cpu_time_counted(cpu_group: tuple[Path, int]) -> bool:
    """Whether a question's CPU time can be read from the kernel, given where its CPU group is made: v2 counts
    it in every group, v1 where cpuacct shares the cpu hierarchy or has a writable one of its own."""
    base, version = cpu_group
    return version == 2 or (base / "cpuacct.usage").exists() or not isinstance(cgroup_parent("cpuacct"), str)


class MemoryCgroup(QuestionCgroup):
    """One question's memory cgroup (v2, or v1's memory controller)."""

    @classmethod
    def parent(cls) -> tuple[Path, int] | str:
        """Where a question's cgroup can be made, or why none can."""
        return cgroup_parent("memory")

    @classmethod
    def create(cls, limit_bytes: int) -> "MemoryCgroup":
        """Make a cgroup limited to `limit_bytes` + MARGIN, without swap. Raises OSError where it cannot."""
        where = cls.parent()
        if isinstance(where, str):
            raise OSError(where)
        limit = str(limit_bytes + MARGIN)
        if where[1] == 2:
            group = cls.make(*where, {"memory.max": limit}, {"memory.swap.max": "0"})
        else:
            group = cls.make(*where, {"memory.limit_in_bytes": limit, "memory.swappiness": "0"}, {})
        return cls(group.path, group.version)

    def usage(self) -> int:
        """Anonymous plus shared (tmpfs, shm, memfd) memory charged to the cgroup, and the kernel memory
        charged to it (page tables, pipe buffers, socket buffers, slab), in bytes. Page cache of files read
        (the libraries) is left out: the kernel reclaims it under the limit."""
        stat = self.path / "memory.stat"
        if self.version == 2:
            kernel = read_key(stat, "kernel") or sum(read_key(stat, k) for k in ("kernel_stack", "pagetables", "sock", "slab"))
            return read_key(stat, "anon") + read_key(stat, "shmem") + kernel
        return read_key(stat, "total_rss") + read_key(stat, "total_shmem") + self._kernel_v1()

    def _kernel_v1(self) -> int:
        try:
            return int((self.path / "memory.kmem.usage_in_bytes").read_text())
        except (OSError, ValueError):  # a kernel without v1 kernel-memory accounting
            return 0

    def oom_kills(self) -> int:
        """How many processes the kernel killed at the hard limit."""
        if self.version == 2:
            return read_key(self.path / "memory.events", "oom_kill")
        return read_key(self.path / "memory.oom_control", "oom_kill")
