"""One question's confinement: its scratch folder, the processes started in it, their memory, their end.

Guarantee: every process of the question is found (cgroup members, the student user's processes, the
namespace's, or in the process layer the session, the grader's descendants and the run's marker), its
memory is counted where it is spent (the private /tmp only once bubblewrap has mounted it, never the
host's), and when the question ends all of them are killed and shown to be gone within bounded waits; a
survivor raises ContainmentError, leaving the scratch folder and the closed modes as they are (fail
closed). The namespace's init is held by a pidfd and its namespace by an open file, so no reused number
is signalled or mistaken for it; bubblewrap's launcher is the grader's, never a student process. What the
student left in shared folders and SysV IPC, and the scratch folder, are then removed, bounded and
without raising (cleanup.py). Relies on: the layers chosen by layers.py, and the grader being a subreaper
that reaps every orphan.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from grader.sandbox.cgroup import CpuacctCgroup, CpuCgroup, MemoryCgroup, QuestionCgroup, cgroup_parent, cpu_cap
from grader.sandbox.cleanup import SWEEP_SECONDS, remove_sysv_ipc, remove_trees
from grader.sandbox.errors import ContainmentError, SandboxError
from grader.sandbox.memory import descriptor_bytes, memory_bytes, shared_tmpfs_used, tmpfs_devices, used_bytes
from grader.sandbox.procfs import (EXIT_SECONDS, describe, doomed, namespace_processes, process_stat, reap_orphans,
                                   session_processes, user_processes)
from grader.sandbox.run import Run
from grader.sandbox.scratch import SLACK, lay_out, mount_tmpfs, unmount
from grader.sandbox.users import KILL_SECONDS, launch_argv

SCRATCH_SECONDS = 60.0  # a bound on removing the scratch folder where it is no tmpfs of its own


@dataclass
class Cleanup:
    """What the end of a question found."""

    leftovers: int = 0  # processes besides the child itself, killed
    removed: list[str] = field(default_factory=list)  # files and IPC objects the student left, removed: the first named
    removed_count: int = 0  # all of them
    note: str = ""  # for staff: a limit of the cleanup


class Jail:
    """One question's confinement: a root-owned scratch folder, the processes started in it, their memory."""

    def __init__(self, sandbox: Run, question: str, memory_limit: int, contents: int = 0):
        """`contents`: bytes the grader will put in the scratch folder (the images, the submission's copy)."""
        self.sandbox, self.memory_limit = sandbox, memory_limit
        self.cgroup = MemoryCgroup.create(memory_limit) if sandbox.cgroups else None
        self.cpu: QuestionCgroup | None = None
        self.cpuacct: QuestionCgroup | None = None
        self._cpu_counter: QuestionCgroup | None = None  # the group whose count judges the time, when one does
        # In cgroup v2 a process is in one cgroup: a v2 memory cgroup whose parent delegates cpu is the CPU group too.
        shared = self.cgroup is not None and cgroup_parent("cpu") == (self.cgroup.path.parent, 2)
        try:
            if shared and sandbox.cpus and self.cgroup is not None:
                for name, value in cpu_cap(sandbox.cpus, 2).items():
                    (self.cgroup.path / name).write_text(value)
            self.cpu = CpuCgroup.create(sandbox.cpus) if sandbox.cpu_share and not shared else None
            if sandbox.cpu_time:
                # Read from the group that counts it: the CPU group (v1 with cpuacct beside cpu, or v2), the v2
                # memory group that is the CPU group too, or a cpuacct group of its own (v1 apart).
                self._cpu_counter = next(
                    (g for g in (self.cpu, self.cgroup) if g is not None and g.cpu_seconds() is not None), None)
                if self._cpu_counter is None:
                    self.cpuacct = self._cpu_counter = CpuacctCgroup.create()
            self.scratch = Path(tempfile.mkdtemp(prefix=f"grader-{question}-"))
            self.mounted = False
            if sandbox.scratch_tmpfs:
                try:
                    mount_tmpfs(self.scratch, contents + memory_limit + SLACK)
                except OSError:
                    self.scratch.rmdir()
                    raise
                self.mounted = True
        except OSError:
            for group in self.groups:
                group.remove()
            raise
        self.submission, self.home = lay_out(self.scratch, sandbox.uid, sandbox.gid)
        self.proc: subprocess.Popen | None = None
        self.init_pid: int | None = None  # the namespace's init, as the grader sees it
        self._init_fd: int | None = None  # a pidfd of it
        self._ns_fd: int | None = None  # its PID namespace, held open
        self.namespace: tuple[int, int] | None = None
        self._set_up = False  # bubblewrap has laid the namespace's mounts (its init has started the child)
        self._leftovers = 0
        self._tmpfs = tmpfs_devices() if sandbox.drops_user and not sandbox.bwrap and not self.cgroup else set()
        # Set at start(), after the grader has put the images and the copy of the submission in place: only
        # what the student's code writes counts as its memory.
        self._baseline: dict[int, int] = {}  # bytes used on each shared tmpfs (the scratch folder may be on one)
        self._scratch_baseline = 0  # bytes used in a mounted scratch folder

    @property
    def groups(self) -> list[QuestionCgroup]:
        """The question's cgroups, one per hierarchy (memory, cpu, cpuacct), whichever could be made."""
        return [g for g in (self.cgroup, self.cpu, self.cpuacct) if g is not None]

    def cpu_seconds(self) -> float | None:
        """CPU time of every process of the question so far, the kernel's count (None where the time is not
        judged on it): no process of the student's can leave the group, so none escapes it, and a
        neighbour's load cannot add to it."""
        return None if self._cpu_counter is None else self._cpu_counter.cpu_seconds()

    def env(self) -> dict[str, str]:
        tmp = "/tmp" if self.sandbox.bwrap else str(self.home)
        return {"HOME": str(self.home), "TMPDIR": tmp, "GRADER_SANDBOX": self.sandbox.marker}

    def run_as_student(self, program: list[str], timeout: float, env: dict[str, str]) -> subprocess.CompletedProcess:
        """Run a helper of the grader's (e.g. the upload copy) as the student user, with no namespaces."""
        argv = launch_argv({"uid": self.sandbox.uid, "gid": self.sandbox.gid}, program) if self.sandbox.drops_user else program
        return subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                              check=False, cwd=self.scratch, start_new_session=True)

    def start(self, program: list[str], env: dict[str, str], pass_fds: tuple[int, ...]) -> subprocess.Popen:
        """Start `program` in the jail: in its namespaces, as the student, in its cgroup."""
        if self.mounted:
            self._scratch_baseline = used_bytes(str(self.scratch))
        self._baseline = shared_tmpfs_used(self._tmpfs)
        info_read = None
        if self.sandbox.bwrap:
            info_read, info_write = os.pipe()
            args = self.sandbox.bwrap.argv(self.memory_limit, self.scratch, [self.submission, self.home], info_write)
            program, pass_fds = args + program, (*pass_fds, info_write)
        if self.sandbox.drops_user or self.groups:
            options = {"uid": self.sandbox.uid, "gid": self.sandbox.gid,
                       "cgroup_procs": [str(g.procs_file) for g in self.groups]}
            program = launch_argv(options, program)
        try:
            self.proc = subprocess.Popen(program, cwd=self.submission, env=env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, pass_fds=pass_fds,
                                         start_new_session=True)
        finally:
            if info_read is not None:
                os.close(info_write)
        if info_read is not None:
            self._read_info(info_read)
        return self.proc

    def returncode(self) -> int | None:
        """The child's exit status as subprocess reports it (negative: killed by that signal). bubblewrap
        passes a death by signal N on as exit status 128 + N, so such a status is read as the signal."""
        code = self.proc.returncode if self.proc else None
        if code is not None and self.sandbox.bwrap and code > 128:
            return 128 - code
        return code

    def _read_info(self, fd: int) -> None:
        """bubblewrap's report of the namespace's init pid; without it the namespace could not be killed."""
        data, deadline = b"", time.monotonic() + 30
        try:
            while b"}" not in data and time.monotonic() < deadline:
                if select.select([fd], [], [], 0.1)[0]:
                    chunk = os.read(fd, 4096)
                    if not chunk:
                        break
                    data += chunk
        finally:
            os.close(fd)
        try:
            pid = int(json.loads(data)["child-pid"])
        except (ValueError, KeyError, TypeError):
            return  # bubblewrap failed to start: its output says why; the user/cgroup kill remains
        self._pin_init(pid)

    def _pin_init(self, pid: int) -> None:
        """Hold the namespace's init by a pidfd (a signal through it can reach no other process, even once
        its number is reused; a kernel before 5.3 has none, and the pid is used while its launcher lives) and
        its PID namespace by an open file (its inode number stays taken, so no later namespace can be
        mistaken for it); both checked to be the launcher's own child. An init that cannot be held while
        its launcher runs could not be killed: the question stops as the grader's problem (fail closed)."""
        try:
            pidfd: int | None = os.pidfd_open(pid)
        except OSError:
            pidfd = None
        try:
            ns = os.open(f"/proc/{pid}/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            ns = None
        st = process_stat(str(pid))
        if self.proc is None or st is None or st[0] != self.proc.pid or ns is None:  # gone, or the pid was reused
            for fd in (pidfd, ns):
                if fd is not None:
                    os.close(fd)
            if self.proc is not None and self.proc.poll() is None:  # its death takes the init (--die-with-parent)
                self.proc.kill()
                raise SandboxError(f"bubblewrap's sandbox (init pid {pid}) could not be held to be killed later")
            return  # bubblewrap failed to start: its output says why
        self.init_pid, self._init_fd, self._ns_fd = pid, pidfd, ns
        info = os.fstat(ns)
        self.namespace = (info.st_dev, info.st_ino)

    def _signal_init(self, sig: int) -> bool:
        """Send `sig` to the namespace's init; False once it is gone."""
        try:
            if self._init_fd is not None:
                signal.pidfd_send_signal(self._init_fd, sig)
            elif self.init_pid is not None and self.proc is not None and self.proc.poll() is None:
                os.kill(self.init_pid, sig)  # no pidfd: only while its launcher lives, so the number is still its
            else:
                return False
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def _launcher(self) -> int | None:
        """bubblewrap's first process, outside the namespaces: the grader's own, whose only child is the
        namespace's init (the student can neither signal nor trace it); never counted as the student's."""
        return self.proc.pid if self.proc is not None and self.sandbox.bwrap else None

    def members(self) -> list[int]:
        """Every live process of the jail that the grader can find, the child and the namespace's init
        included (bubblewrap's launcher is not: it is the grader's)."""
        found: set[int] = set()
        for group in self.groups:
            found.update(group.pids())
        if self.sandbox.uid is not None:
            found.update(user_processes(self.sandbox.uid))
        if self.namespace:
            found.update(namespace_processes(self.namespace))
        if self.proc is not None and not self.sandbox.drops_user and not self.sandbox.bwrap:
            found.update(session_processes(self.proc.pid, self.sandbox.marker))
        if self.proc is not None and self.proc.poll() is None:
            found.add(self.proc.pid)
        found.discard(self._launcher() or -1)
        return sorted(found)

    def _main(self) -> set[int]:
        """The processes that are the grader's own start-up chain, not processes the student started."""
        main = {self.proc.pid} if self.proc else set()
        if self.init_pid:
            main.add(self.init_pid)
            try:
                main.update(int(p) for p in Path(f"/proc/{self.init_pid}/task/{self.init_pid}/children").read_text().split()[:1])
            except OSError:
                pass
        return main

    def snapshot(self) -> None:
        """Count the processes the student left running, now that its main process is done: in the
        namespaces they die with it, before close() could count them."""
        main = self._main()
        self._leftovers = max(self._leftovers, len([p for p in self.members() if p not in main]))

    def memory(self, deadline: float) -> int:
        """Bytes of memory the student's processes use now, counted where it is spent."""
        if self.cgroup:
            return self.cgroup.usage()
        pids = self.members()
        used = memory_bytes(pids, self.memory_limit, deadline) + descriptor_bytes(pids, deadline)
        used += self._private_tmpfs_used()
        if self.mounted:  # what the student wrote to its scratch folder
            used += max(0, used_bytes(str(self.scratch)) - self._scratch_baseline)
        now = shared_tmpfs_used(self._tmpfs)
        return used + sum(max(0, now.get(dev, 0) - before) for dev, before in self._baseline.items())

    def _private_tmpfs_used(self) -> int:
        """Bytes in the namespace's private /tmp and /dev/shm. Read only once bubblewrap has laid its mounts
        (its init has started the child: before that /proc/<init>/root is the host's, whose /tmp may hold a
        whole disk), only from a file system that is not the host's folder, and only while the pidfd shows
        the init alive, so the path read was its own."""
        if self.init_pid is None:
            return 0
        if not self._set_up:
            try:
                self._set_up = bool(Path(f"/proc/{self.init_pid}/task/{self.init_pid}/children").read_text().split())
            except FileNotFoundError:  # a kernel without CONFIG_PROC_CHILDREN: the device check below alone
                self._set_up = True
            except OSError:
                return 0
            if not self._set_up:
                return 0
        used = 0
        for mount in ("/tmp", "/dev/shm"):
            try:
                private, host = os.stat(f"/proc/{self.init_pid}/root{mount}"), os.stat(mount)
            except OSError:
                continue
            if private.st_dev != host.st_dev:
                used += used_bytes(f"/proc/{self.init_pid}/root{mount}")
        return used if self._signal_init(0) else 0

    def oom_killed(self) -> bool:
        return bool(self.cgroup and self.cgroup.oom_kills())

    def _kill_round(self) -> None:
        for group in self.groups:
            group.kill()
        self._signal_init(signal.SIGKILL)  # the namespace's init: its death takes every process of it along
        if self.sandbox.drops_user:
            self.sandbox.kill_user()
        elif not self.sandbox.bwrap:
            for pid in self.members():
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        reap_orphans(spare=self.proc.pid if self.proc else -1)

    def close(self) -> Cleanup:
        """Kill everything of the jail, prove it is gone, remove what it left. Every wait is bounded; a
        survivor raises ContainmentError and leaves the scratch folder and the closed modes as they are."""
        result = Cleanup()
        self.snapshot()
        result.leftovers = self._leftovers
        started = time.monotonic()
        while True:
            self._kill_round()
            if self.proc is not None:
                try:
                    self.proc.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    pass
            alive = self.members()
            # A killed process still exiting runs no code of its own; it only needs time to be gone. bubblewrap's
            # launcher exits once its namespace is empty, which takes a while after a fork bomb.
            running = [p for p in alive if not doomed(p)]
            launching = self._launcher() is not None and self.proc is not None and self.proc.poll() is None
            waited = time.monotonic() - started
            if (not alive and not launching) or (running and waited > KILL_SECONDS) or waited > EXIT_SECONDS:
                break
        if alive:
            described = ", ".join(f"{pid} ({describe(pid)})" for pid in alive[:5])
            self.sandbox.breach = (f"{len(alive)} process(es) of the student survived every attempt to kill them "
                                   f"({described}); grading stopped, nothing was restored. Staff must look.")
            self._release()
            raise ContainmentError(self.sandbox.breach)
        if self.proc is not None and self.proc.poll() is None:  # the launcher, its namespace empty: the grader's own
            self.proc.kill()
            try:
                self.proc.wait(timeout=KILL_SECONDS)
            except subprocess.TimeoutExpired:
                pass
        try:
            result.note = self._remove_leftovers(result)
        finally:
            self._release()
        return result

    def _remove_leftovers(self, result: Cleanup) -> str:
        """Remove the cgroups, what the student left in shared folders and SysV IPC, and the scratch folder;
        each step bounded and none able to raise. Returns a note for staff of what could not be done."""
        notes = []
        stuck = [str(g.path) for g in self.groups if not g.remove()]
        if stuck:
            notes.append(f"could not remove the cgroup(s) {', '.join(stuck)}")
        if self.sandbox.uid is not None:
            if not self.sandbox.bwrap:
                folders, complete = self.sandbox.shared_folders()
                swept = self.sandbox.sweep(folders, SWEEP_SECONDS)
                result.removed += swept.names
                result.removed_count += swept.count
                if not complete:
                    notes.append("the search for world-writable folders did not finish; only those found were "
                                 "checked for leftover files")
                if not swept.complete:
                    notes.append(f"the student's leftover files were not all removed within {SWEEP_SECONDS:g} s "
                                 f"({swept.count} removed); the next run removes the rest before it starts, or refuses")
            ipc = remove_sysv_ipc(self.sandbox.uid)
            result.removed += ipc
            result.removed_count += len(ipc)
        if self.mounted and not unmount(self.scratch):
            notes.append(f"could not unmount the scratch folder {self.scratch}")
        elif not remove_trees([self.scratch], time.monotonic() + SCRATCH_SECONDS):  # once unmounted, an empty folder
            notes.append(f"could not remove the scratch folder {self.scratch} within {SCRATCH_SECONDS:g} s")
        return "; ".join(notes)

    def _release(self) -> None:
        """Let go of the init's pidfd and its namespace."""
        for fd in (self._init_fd, self._ns_fd):
            if fd is not None:
                os.close(fd)
        self._init_fd = self._ns_fd = None
