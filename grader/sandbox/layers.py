"""Choosing the layers of isolation for one grading run, and the run's Sandbox.

Guarantee: the strongest isolation the machine allows (or exactly the one asked for) is in force before
any student code runs, each layer is named in every report, and nothing is silently weakened: an asked-for
layer that cannot be had, root without a way to run student code as another user, or another run holding
the student user, refuses (SandboxError). In the process layer the grader first makes itself
non-dumpable and a subreaper. Relies on: the probes of namespaces.py and cgroup.py, run here, not assumed.
"""
from __future__ import annotations

import os
import resource
import secrets
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from grader.sandbox.cgroup import MemoryCgroup, cgroup_parent, cpu_time_counted, enclosing_cpus
from grader.sandbox.cleanup import KNOWN_SHARED, SWEEP_SECONDS, WALK_SECONDS, Swept, sweep, walk_world_writable
from grader.sandbox.closing import closed_paths, closed_to_others, inaccessible_ancestor
from grader.sandbox.errors import ContainmentError, SandboxError
from grader.sandbox.jail import Jail
from grader.sandbox.namespaces import Bwrap, bwrap_base, interpreter_paths, probe_bwrap
from grader.sandbox.procfs import user_tasks
from grader.sandbox.scratch import mount_refused, unmount_stale
from grader.sandbox.users import DEFAULT_USER, KILLER_USER, ensure_user, kill_user, state_file, take_lock
from grader.threads import usable_cores
from grader.time_limit import describe as describe_time_limit

ISOLATIONS = ("auto", "namespace", "user", "process")
MEMORY_ACCOUNTING = ("auto", "cgroup", "processes")
MAX_PROCESSES = 512  # processes and threads the student's code may have at once
MIN_CPUS = 0.1  # the least CPU time a run beside others may be left
PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 4, 36


def _prctl(option: int, value: int) -> None:
    import ctypes

    ctypes.CDLL(None).prctl(option, value, 0, 0, 0)


@dataclass
class Sandbox:
    """The isolation of one grading run; `breach` is set, for good, once a student process survived."""

    isolation: str  # the strongest layer in force: "namespace", "user" or "process"
    note: str  # what the grader tells people about the isolation in force
    layers: dict[str, str]  # layer -> what is in force, for results.json
    uid: int | None = None  # the student user, when root runs student code as it
    gid: int | None = None
    killer: tuple[int, int] | None = None  # (uid, gid) of the user the killer runs as
    bwrap: Bwrap | None = None  # bubblewrap's arguments, when namespaces are in force
    cgroups: bool = False
    cpu_share: bool = False  # each question its own CPU scheduling group
    cpus: float | None = None  # each question's cap in CPUs, when runs share the machine (a batch)
    cpu_time: bool = False  # time judged on the question's CPU time, which its cgroup counts (capped runs)
    scratch_tmpfs: bool = False  # each question's scratch folder a tmpfs of its own size (scratch.py)
    marker: str = field(default_factory=lambda: secrets.token_hex(8))
    protected: list[Path] = field(default_factory=list)
    breach: str | None = None
    _lock: int | None = None
    _unswept: Path | None = None  # marks that a sweep of the student user's leftovers did not finish (root's)
    _shared: list[Path] = field(default_factory=list)
    _shared_done: threading.Event = field(default_factory=threading.Event)
    _shared_complete: bool = True

    @property
    def drops_user(self) -> bool:
        return self.uid is not None

    @property
    def student(self) -> tuple[int, int] | None:
        """(uid, gid) of the student user, when root runs student code as it."""
        return (self.uid, self.gid) if self.uid is not None and self.gid is not None else None

    def close(self) -> None:
        """Release the run's lock."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def jail(self, question: str, memory_limit: int, contents: int = 0) -> Jail:
        if self.breach:
            raise ContainmentError(self.breach)
        try:
            return Jail(self, question, memory_limit, contents)
        except OSError as exc:
            raise SandboxError(f"could not set up the question's confinement: {exc}") from None

    def kill_user(self) -> list[int]:
        """SIGKILL every process of the student user (user layer); returns those still alive (users.kill_user)."""
        assert self.uid is not None and self.killer is not None
        return kill_user(self.uid, self.killer)

    def shared_folders(self) -> tuple[list[Path], bool]:
        """World-writable folders (walked once per run, in the background) and whether the walk finished."""
        self._shared_done.wait(WALK_SECONDS + 5)
        return sorted(set(self._shared) | set(KNOWN_SHARED)), self._shared_complete and self._shared_done.is_set()

    def _walk_shared(self) -> None:
        found, complete = walk_world_writable(time.monotonic() + WALK_SECONDS)
        self._shared, self._shared_complete = found, complete
        self._shared_done.set()

    def process_cap(self) -> int | None:
        """RLIMIT_NPROC for the child. The kernel counts it per user, and (from Linux 5.14) per user namespace:
        the student user's processes, or the namespace's, start from none, so MAX_PROCESSES holds as it is.
        Where the child's processes are the grader's own user's, in the kernel's count (the process layer, or
        namespaces without root before 5.14), its other processes count too: the cap is MAX_PROCESSES more
        than that user has now. Never above the hard limit the child inherits (it could not set it). None as
        root, which the kernel does not hold to it."""
        if os.geteuid() == 0 and not self.drops_user:
            return None
        cap = MAX_PROCESSES
        if not self.drops_user and not (self.bwrap and _kernel() >= (5, 14)):
            cap += user_tasks(os.getuid())
        hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
        return cap if hard == resource.RLIM_INFINITY else min(cap, hard)

    def sweep(self, folders: list[Path], seconds: float) -> Swept:
        """Remove what the student user left at the top of `folders`, within `seconds` (user layer only;
        nothing of the student runs now, so nothing can race the removal). One that does not finish leaves a
        mark, and the next run of this user sweeps every world-writable folder before it starts."""
        if self.uid is None:
            return Swept()
        swept = sweep(folders, self.uid, self.gid, time.monotonic() + seconds)
        if not swept.complete and self._unswept is not None:
            self._unswept.touch(mode=0o600)
        return swept


def _kernel() -> tuple[int, int]:
    try:
        major, minor = os.uname().release.split(".")[:2]
        return int(major), int("".join(c for c in minor if c.isdigit()) or 0)
    except ValueError:
        return 0, 0


@contextmanager
def protected(sandbox: Sandbox) -> Iterator[None]:
    """The protected files and folders closed to the student user while grading (user layer); a process of
    the student still alive at the end is a breach, and they stay closed."""
    if sandbox.uid is None:
        yield
        return
    with closed_to_others(sandbox.protected, [sandbox.uid]) as kept:
        try:
            yield
        finally:
            if sandbox.breach:
                kept.append(sandbox.breach)
    if kept and sandbox.breach is None:
        sandbox.breach = kept[0]


def question_cpus(cpu_share: int) -> float:
    """The cap of each question when `cpu_share` runs share the CPUs the grader may use."""
    return (enclosing_cpus() or usable_cores()) / cpu_share


def _python_blocked() -> str | None:
    for path in (os.path.realpath(sys.executable), sys.prefix, sys.base_prefix):
        blocked = inaccessible_ancestor(Path(path))
        if blocked is not None:
            return (f"Python lives under {blocked}, which the unprivileged user cannot enter: install Python where "
                    f"all users can run it (the system Python; the Docker image does), or pass --isolation process "
                    f"to run student code as root (trusted code only)")
    return None


def prepare(isolation: str = "auto", memory: str = "auto", protected: list[Path] | None = None,
            user: str = DEFAULT_USER, cpu_share: int | None = None) -> Sandbox:
    """Choose the strongest isolation available (or the one asked for) and get it ready.

    Refuses (SandboxError) rather than weaken: an asked-for layer that is missing, root without a way to
    run student code as another user (unless `isolation="process"`), another run holding the lock, no CPU
    scheduling group per question when `cpu_share` asks for one. `cpu_share=N`: this run is one of up to N on
    the machine at once (a batch), and each question is capped at 1/N of the CPUs the grader may use."""
    protected = [p.resolve() for p in (protected or [])]
    root = os.geteuid() == 0
    if isolation not in ISOLATIONS:
        raise SandboxError(f"unknown isolation {isolation!r} (expected one of {', '.join(ISOLATIONS)})")
    if isolation == "process":
        if cpu_share:
            raise SandboxError("--cpu-share: the process layer makes no CPU scheduling group per question")
        return _process_sandbox("asked for with --isolation process", root)
    if isolation == "user" and not root:
        raise SandboxError("--isolation user needs root (run in the Docker image, or as root)")
    layers: dict[str, str] = {}
    uid = gid = killer = None
    if root:
        blocked = _python_blocked()
        if blocked:
            raise SandboxError(f"refusing to run student code as root: {blocked}")
        uid, gid = ensure_user(user)
        killer = ensure_user(KILLER_USER)
        layers["user"] = f"student code runs as '{user}' (uid {uid}), never as root; killed by a process it cannot signal"
    bwrap: Bwrap | None = None
    if isolation == "user":
        layers["namespaces"] = "not used (--isolation user)"
    else:
        why = probe_bwrap(uid, gid, protected)
        if why is None:
            bwrap = bwrap_base(interpreter_paths(protected), closed_paths(protected))
            layers["namespaces"] = ("private PID, mount, IPC, network, UTS and user namespaces (bubblewrap): only the "
                                    "interpreter and the scratch folder are visible")
        elif isolation == "namespace":
            raise SandboxError(f"--isolation namespace: {why}")
        else:
            layers["namespaces"] = f"not in force: {why}"
            if not root:
                if cpu_share:
                    raise SandboxError("--cpu-share: CPU scheduling groups need root")
                return _process_sandbox(f"namespaces unavailable ({why}) and the grader is not root", root)
    where = MemoryCgroup.parent() if memory != "processes" else "--memory-accounting processes"
    cgroups = not isinstance(where, str)
    if not cgroups and memory == "cgroup":
        raise SandboxError(f"--memory-accounting cgroup: {where}")
    if cgroups:
        layers["memory"] = "a memory cgroup per question (shared memory counted)"
    else:
        spent = "its private /tmp and /dev/shm" if bwrap else "the growth of the shared tmpfs folders"
        layers["memory"] = (f"resident anonymous and shared memory, memfd files and {spent} of the student's "
                            f"processes (no cgroup: {where})")
    cpu_where, cpus = cgroup_parent("cpu"), None
    if isinstance(cpu_where, str):
        if cpu_share:
            raise SandboxError(f"--cpu-share: {cpu_where}; a run beside others could take their CPU time")
        layers["cpu"] = f"not in force: {cpu_where}"
    else:
        layers["cpu"] = ("a CPU scheduling group (cgroup) per question, of the same weight as any other: however "
                         "many processes a neighbour starts, it cannot take this question's share")
        if cpu_share:
            cpus = question_cpus(cpu_share)
            machine = cpus * cpu_share
            if cpus < MIN_CPUS:
                raise SandboxError(f"--cpu-share {cpu_share}: {machine:g} CPUs shared by {cpu_share} runs leaves "
                                   f"{cpus:.2f} CPU each, under the {MIN_CPUS} a run needs")
            layers["cpu"] += (f", capped at {cpus:.2f} CPU ({machine:g} shared by {cpu_share} runs), busy "
                              "neighbours or idle")
    cpu_time = cpus is not None and not isinstance(cpu_where, str) and cpu_time_counted(cpu_where)
    layers["time"] = describe_time_limit(cpus, cpu_time)
    refused = mount_refused()
    if refused is None:
        layers["disk"] = ("each question's scratch folder (its copy of the submission, its home) a tmpfs of its own, "
                          "sized to what the grader puts there plus the memory limit, its growth counted as memory"
                          + ("" if bwrap else "; the shared world-writable folders are not bounded in total"))
    else:
        layers["disk"] = f"not bounded in total ({refused}); each file the student writes is capped (RLIMIT_FSIZE)"
    sandbox = Sandbox("namespace" if bwrap else "user", "", layers, uid=uid, gid=gid, killer=killer, bwrap=bwrap,
                      cgroups=cgroups, cpu_share=not isinstance(cpu_where, str), cpus=cpus,
                      cpu_time=cpu_time, scratch_tmpfs=refused is None,
                      protected=closed_paths(protected) if root and not bwrap else [])
    if root:
        # Orphans of the student's (a double fork) come to the grader, which reaps them: a zombie reparented
        # to an init that does not reap would hold one of the student user's process slots for good.
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
        sandbox._lock = take_lock(user)
        survivors = sandbox.kill_user()  # whatever an earlier run may have left
        if survivors:
            sandbox.close()
            raise SandboxError(f"{len(survivors)} process(es) of '{user}' from an earlier run cannot be killed")
        try:
            _sweep_earlier(sandbox, user)
        except SandboxError:
            sandbox.close()
            raise
        if uid is not None:
            unmount_stale(uid)  # scratch folders a killed grader left mounted, the test images in them
        if not bwrap:
            threading.Thread(target=sandbox._walk_shared, daemon=True).start()
        else:
            sandbox._shared_done.set()
    sandbox.note = "Isolation: " + "; ".join(f"{k}: {v}" for k, v in layers.items()) + "."
    return sandbox


def _sweep_earlier(sandbox: Sandbox, user: str) -> None:
    """Remove what an earlier run of `user` left: in the usual shared folders always, and in every
    world-writable folder when its sweep was cut short (its mark). Refuses when that cannot finish: the
    next student would find the files."""
    sandbox._unswept = state_file(user, "unswept")
    folders = list(KNOWN_SHARED)
    if sandbox._unswept.exists():  # as far as the walk gets in its bound, as after a question
        folders = sorted(set(folders) | set(walk_world_writable(time.monotonic() + WALK_SECONDS)[0]))
    earlier = sandbox.sweep(folders, SWEEP_SECONDS)
    if not earlier.complete:
        raise SandboxError(f"files of '{user}' left by an earlier run in the world-writable folders could not all be "
                           f"removed within {SWEEP_SECONDS:g} s ({earlier.count} removed); the next student would "
                           f"find them. Remove them (as root: find / -xdev -user {user} -delete) and run again")
    sandbox._unswept.unlink(missing_ok=True)


def _process_sandbox(why: str, root: bool) -> Sandbox:
    """The weakest layer: the child shares the grader's user. Shield the grader first: non-dumpable (a
    same-user child can neither ptrace it nor read its memory) and a subreaper (orphans stay in its tree)."""
    _prctl(PR_SET_DUMPABLE, 0)
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    who = "root (no isolation from the grader: trusted code only)" if root else "the grader's own user"
    note = (f"Isolation: student code ran in a separate process as {who} ({why}); it could read files that user "
            "can read, the labels included. The stronger isolation needs bubblewrap, or root as in the Docker image "
            "or on Gradescope.")
    return Sandbox("process", note, {"process": f"separate process as {who} ({why})"})
