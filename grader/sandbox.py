"""Where and as whom student code runs, and how the grader proves that none of it is left afterwards.

Layers, each used where the kernel allows it and each named in every report (`Sandbox.layers`):
- namespaces (bubblewrap, run as the unprivileged user): private PID, mount, IPC, network, UTS and user
  namespaces. The student sees only the interpreter, its libraries, a few files of /etc and the scratch
  folder, read-only but for its own copy of the submission, plus a private size-limited /tmp and /dev/shm.
  Killing the namespace's init kills every process in it, and the grader checks that none is left.
- user (the grader runs as root): student code runs as `grader-student`, never as root, with no
  supplementary groups; the reference data, the config, the grader and every copy of them the grader
  knows of (the checkout's .git, its reference_data/) are closed to other users while grading. A killer
  the student cannot signal (killer.py) ends every process of that user; files it left in world-writable
  folders and its SysV IPC objects are removed.
- memory cgroup (root, where the cgroup file system is writable): the kernel counts and caps the memory
  of the question's processes, shared memory included (grader/cgroup.py).
- process (the fallback on a machine with neither): a separate process and session, seccomp filter,
  limits; as the grader's own user, which the report states plainly.

Inside default Docker and on Gradescope namespaces and cgroups are refused, so "user" is what holds there.
Whatever the layers, a student process that survives its question stops the run (ContainmentError):
nothing is restored, no later question starts, and results.json says why.
"""
from __future__ import annotations

import fcntl
import functools
import json
import os
import pwd
import secrets
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from grader.cgroup import MemoryCgroup, resident_bytes
from grader.text import printable

DEFAULT_USER = "grader-student"
KILLER_USER = "grader-killer"
ISOLATIONS = ("auto", "namespace", "user", "process")
MEMORY_ACCOUNTING = ("auto", "cgroup", "processes")
LOCK_FOLDER = Path("/run")  # mp-grader-USER.lock: one run at a time per student user
HERE = Path(__file__).resolve().parent
LAUNCH, KILLER = HERE / "launch.py", HERE / "killer.py"
# Folders any user may write to on common systems; the full list is found by walking the file system.
KNOWN_SHARED = tuple(Path(p) for p in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock", "/dev/mqueue"))
WALK_SECONDS = 60.0  # a bound on the search for world-writable folders
KILL_SECONDS = 5.0  # how long the grader tries to kill and then waits to see every process gone
EXIT_SECONDS = 60.0  # how long killed processes may take to finish exiting (hundreds of big ones take seconds)
PF_EXITING = 0x4  # /proc/<pid>/stat flags: the process is in exit() and never runs its own code again
SIGKILL_BIT = 1 << (signal.SIGKILL - 1)  # in the pending-signal masks of /proc/<pid>/status
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "passwd", "group", "nsswitch.conf", "localtime",
             "os-release", "alternatives", "mime.types", "fonts", "ssl")
ROOT_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 4, 36


class SandboxError(RuntimeError):
    """The isolation asked for cannot be had here: grading refuses to start."""


class ContainmentError(RuntimeError):
    """A process of the student outlived its question: the run stops, fail closed."""


def _inaccessible_ancestor(path: Path) -> Path | None:
    """The first folder on the way to `path` that other users cannot enter, if any."""
    for folder in [*reversed(path.resolve().parents), path.resolve()]:
        if folder.is_dir() and not os.stat(folder).st_mode & stat.S_IXOTH:
            return folder
    return None


def _prctl(option: int, value: int) -> None:
    import ctypes

    ctypes.CDLL(None).prctl(option, value, 0, 0, 0)


def ensure_user(name: str) -> tuple[int, int]:
    """(uid, gid) of a system user with a group of its own, created on first use."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", name], check=True, capture_output=True)
        entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


@functools.cache
def _child_sys_path() -> list[str]:
    """sys.path of the child's interpreter as it starts it (`python -I`: site-packages and .pth entries,
    no PYTHONPATH, nothing the grader itself added at run time)."""
    proc = subprocess.run([sys.executable, "-I", "-c", "import json, sys; print(json.dumps(sys.path))"],
                          capture_output=True, text=True, check=True, timeout=60, env={}, cwd="/")
    return json.loads(proc.stdout)


def _interpreter_paths(protected: list[Path]) -> list[Path]:
    """Folders the child's interpreter needs (prefixes, site-packages), outside the system folders that are
    mounted anyway. A sys.path entry that holds anything protected (a checkout installed with
    `pip install -e`) is left out; an interpreter prefix that does is refused."""
    system = [Path("/") / d for d in ROOT_DIRS]
    prefixes = {Path(p).resolve() for p in (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix)}
    prefixes.add(Path(os.path.realpath(sys.executable)).parent)
    entries = {Path(p).resolve() for p in _child_sys_path() if p and Path(p).is_dir()}
    keep = set()
    for path in prefixes | entries:
        if any(_within(path, s) for s in system):
            continue
        if any(_within(p, path) for p in protected):
            if path in prefixes:
                raise SandboxError(f"the interpreter's folder {path} holds the grader's files or the reference data; "
                                   "use an interpreter installed elsewhere")
            continue
        keep.add(path)
    return sorted(p for p in keep if not any(q != p and _within(p, q) for q in keep))


def _git_dirs(paths: list[Path]) -> set[Path]:
    """The .git folder of every work tree holding one of `paths`: its objects hold copies of committed files."""
    found = set()
    for path in paths:
        for folder in [path, *path.parents]:
            if (folder / ".git").exists():
                found.add(folder / ".git")
                break
    return found


def _walk_world_writable(deadline: float) -> tuple[list[Path], bool]:
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


def _status_uids(pid: str) -> tuple[str, list[int]] | None:
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


def _pids() -> list[str]:
    return [p for p in os.listdir("/proc") if p.isdigit()]


def user_processes(uid: int) -> list[int]:
    """Live (not zombie) processes with `uid` as any of their uids."""
    found = []
    for pid in _pids():
        info = _status_uids(pid)
        if info and info[0] != "Z" and uid in info[1]:
            found.append(int(pid))
    return found


def _namespace_processes(ns: tuple[int, int]) -> list[int]:
    found = []
    for pid in _pids():
        try:
            st = os.stat(f"/proc/{pid}/ns/pid")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == ns and (info := _status_uids(pid)) and info[0] != "Z":
            found.append(int(pid))
    return found


def _stat(pid: str) -> tuple[int, int, str, int] | None:
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


def _session_processes(session: int, marker: str) -> list[int]:
    """Process mode: the child's session, every descendant of the grader (a subreaper, so orphans stay in
    its tree even after a setsid), and anything carrying the run's environment marker."""
    me = os.getpid()
    stats = {int(pid): st for pid in _pids() if int(pid) != me and (st := _stat(pid)) is not None and st[2] != "Z"}
    found = set()
    for pid, (_, sid, _, _) in stats.items():
        chain, seen = pid, set()
        while chain in stats and chain not in seen and chain != me:
            seen.add(chain)
            chain = stats[chain][0]
        if sid == session or chain == me or _has_marker(str(pid), marker):
            found.add(pid)
    return sorted(found)


def _describe(pid: int) -> str:
    """State, parent and command of a process, for staff."""
    info, st = _status_uids(str(pid)), _stat(str(pid))
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()[:60].replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        command = "?"
    return printable(f"state {info[0] if info else '?'}, doomed {_doomed(pid)}, parent {st[0] if st else '?'}, "
                     f"uids {info[1] if info else '?'}: {command.strip()}", name=True)


def _doomed(pid: int) -> bool:
    """True once a process can never run its own code again: it is in exit(), or a SIGKILL is pending for
    it (handled before any return to user space; with hundreds of processes on two cores, some wait
    seconds for the CPU time to die), or it is gone."""
    st = _stat(str(pid))
    if st is None or st[3] & PF_EXITING:
        return True
    try:
        with open(f"/proc/{pid}/status") as f:
            pending = [int(line.split()[1], 16) for line in f if line.startswith(("SigPnd:", "ShdPnd:"))]
        return any(mask & SIGKILL_BIT for mask in pending)
    except (OSError, IndexError, ValueError):
        return True


def _reap_orphans(spare: int) -> None:
    """Collect the exit status of dead processes reparented to the grader (a subreaper), except `spare`."""
    me = os.getpid()
    for pid in _pids():
        st = _stat(pid)
        if st is not None and st[0] == me and st[2] == "Z" and int(pid) != spare:
            try:
                os.waitpid(int(pid), os.WNOHANG)
            except ChildProcessError:
                pass


def _pss(pid: int) -> int:
    """The proportional share of the same (where the kernel lacks the split: the resident sum)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            parts = [int(line.split()[1]) * 1024 for line in f if line.startswith(("Pss_Anon:", "Pss_Shmem:"))]
    except (OSError, ValueError):
        parts = []
    return sum(parts) if len(parts) == 2 else resident_bytes(pid)


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


def _memfd_bytes(pids: list[int], deadline: float) -> int:
    """Bytes held in memfd files that these processes have open (memory no resident set shows unmapped)."""
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
                if not os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/memfd:"):
                    continue
                st = os.stat(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def _used_bytes(folder: str) -> int:
    try:
        st = os.statvfs(folder)
    except OSError:
        return 0
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def _tmpfs_devices() -> set[int]:
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


def _remove_sysv_ipc(uid: int) -> list[str]:
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


@dataclass
class Sandbox:
    """The isolation of one grading run; `breach` is set, for good, once a student process survived."""

    isolation: str  # the strongest layer in force: "namespace", "user" or "process"
    note: str  # what the grader tells people about the isolation in force
    layers: dict[str, str]  # layer -> what is in force, for results.json
    uid: int | None = None  # the student user, when root runs student code as it
    gid: int | None = None
    killer: tuple[int, int] | None = None  # (uid, gid) of the user the killer runs as
    bwrap: list[str] = field(default_factory=list)  # bubblewrap's fixed arguments, when namespaces are in force
    tmpfs_size: bool = False  # bubblewrap can cap the private /tmp and /dev/shm
    cgroups: bool = False
    marker: str = field(default_factory=lambda: secrets.token_hex(8))
    protected: list[Path] = field(default_factory=list)
    breach: str | None = None
    _lock: int | None = None
    _shared: list[Path] = field(default_factory=list)
    _shared_done: threading.Event = field(default_factory=threading.Event)
    _shared_complete: bool = True

    @property
    def drops_user(self) -> bool:
        return self.uid is not None

    def close(self) -> None:
        """Release the run's lock."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def jail(self, question: str, memory_limit: int) -> "Jail":
        if self.breach:
            raise ContainmentError(self.breach)
        try:
            return Jail(self, question, memory_limit)
        except OSError as exc:
            raise SandboxError(f"could not set up the question's confinement: {exc}") from None

    def kill_user(self) -> list[int]:
        """SIGKILL every process of the student user (user layer) and return those still alive after
        KILL_SECONDS; each round of killer.py is bounded too, so a stuck kill cannot hang the grader."""
        assert self.uid is not None and self.killer is not None
        deadline = time.monotonic() + KILL_SECONDS
        while (alive := [p for p in user_processes(self.uid) if not _doomed(p)]) and time.monotonic() < deadline:
            try:
                subprocess.run([sys.executable, "-I", "-S", str(KILLER), str(self.uid), *map(str, self.killer), "3"],
                               env={}, stdin=subprocess.DEVNULL, capture_output=True, check=False, timeout=KILL_SECONDS)
            except subprocess.TimeoutExpired:
                pass
            time.sleep(0.02)
        return alive

    def shared_folders(self) -> tuple[list[Path], bool]:
        """World-writable folders (walked once per run, in the background) and whether the walk finished."""
        self._shared_done.wait(WALK_SECONDS + 5)
        return sorted(set(self._shared) | set(KNOWN_SHARED)), self._shared_complete and self._shared_done.is_set()

    def _walk_shared(self) -> None:
        found, complete = _walk_world_writable(time.monotonic() + WALK_SECONDS)
        self._shared, self._shared_complete = found, complete
        self._shared_done.set()

    def sweep(self, folders: list[Path]) -> list[str]:
        """Remove what the student user left at the top of `folders` (user layer only; nothing of the
        student runs now, so nothing can race the removal)."""
        if self.uid is None:
            return []
        removed = []
        for folder in folders:
            try:
                entries = list(folder.iterdir())
            except OSError:
                continue
            for entry in entries:
                try:
                    st = entry.lstat()
                    if st.st_uid != self.uid and st.st_gid != self.gid:
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink()
                    removed.append(printable(entry, name=True))
                except OSError:
                    pass
        return removed


def _python_blocked() -> str | None:
    for path in (os.path.realpath(sys.executable), sys.prefix, sys.base_prefix):
        blocked = _inaccessible_ancestor(Path(path))
        if blocked is not None:
            return (f"Python lives under {blocked}, which the unprivileged user cannot enter: install Python where "
                    f"all users can run it (the system Python; the Docker image does), or pass --isolation process "
                    f"to run student code as root (trusted code only)")
    return None


def _launch_argv(options: dict, program: list[str]) -> list[str]:
    return [sys.executable, "-I", "-S", str(LAUNCH), json.dumps(options), "--", *program]


@functools.cache
def _help_text(program: str) -> str:
    return subprocess.run([program, "--help"], capture_output=True, text=True, check=False, timeout=30).stdout


def _bwrap_base(paths: list[Path]) -> tuple[list[str], bool]:
    """bubblewrap's arguments, except the per-question folders and the command, and whether this
    bubblewrap can cap the size of a tmpfs (--size, from 0.8)."""
    bwrap = shutil.which("bwrap") or "bwrap"
    helptext = _help_text(bwrap)
    args = [bwrap, "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-net", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session"]
    if "--disable-userns" in helptext:
        args.append("--disable-userns")
    for name in ROOT_DIRS:
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    for path in paths:
        args += ["--ro-bind", str(path), str(path)]
    for name in ETC_FILES:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    args += ["--proc", "/proc", "--dev", "/dev"]
    gpus = sorted(str(p) for p in Path("/dev").glob("nvidia*") if not p.is_dir())
    for device in gpus:
        args += ["--dev-bind", device, device]
    args += ["--ro-bind", "/sys", "/sys"] if gpus else ["--ro-bind-try", "/sys/devices/system/cpu", "/sys/devices/system/cpu"]
    return args, "--size" in helptext


def _probe_bwrap(uid: int | None, gid: int | None) -> str | None:
    """None when bubblewrap can make its namespaces here as the student user, else why not."""
    if not shutil.which("bwrap"):
        return "bubblewrap (bwrap) is not installed"
    try:
        base, _ = _bwrap_base(_interpreter_paths([]))
    except SandboxError as exc:
        return str(exc)
    program = base + ["--", sys.executable, "-I", "-S", "-c", "pass"]
    if uid is not None:
        program = _launch_argv({"uid": uid, "gid": gid}, program)
    try:
        proc = subprocess.run(program, capture_output=True, text=True, timeout=30, check=False,
                              stdin=subprocess.DEVNULL, cwd="/")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap could not run: {exc}"
    if proc.returncode != 0:
        return f"bubblewrap cannot make namespaces here ({printable(proc.stderr.strip()[:200])})"
    return None


def closed_paths(protected: list[Path]) -> list[Path]:
    """What the user layer closes: the protected paths, the .git of their work trees, and the reference
    data kept beside the grader (a second copy of the labels when --data points elsewhere)."""
    extra = _git_dirs(protected) | {HERE.parent / "reference_data"}
    return sorted({p for p in [*protected, *extra] if p.exists()})


def prepare(isolation: str = "auto", memory: str = "auto", protected: list[Path] | None = None,
            user: str = DEFAULT_USER) -> Sandbox:
    """Choose the strongest isolation available (or the one asked for) and get it ready.

    Refuses (SandboxError) rather than weaken: an asked-for layer that is missing, root without a way to
    run student code as another user (unless `isolation="process"`), another run holding the lock."""
    protected = [p.resolve() for p in (protected or [])]
    root = os.geteuid() == 0
    if isolation not in ISOLATIONS:
        raise SandboxError(f"unknown isolation {isolation!r} (expected one of {', '.join(ISOLATIONS)})")
    if isolation == "process":
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
    bwrap: list[str] = []
    tmpfs_size = False
    if isolation == "user":
        layers["namespaces"] = "not used (--isolation user)"
    else:
        why = _probe_bwrap(uid, gid)
        if why is None:
            bwrap, tmpfs_size = _bwrap_base(_interpreter_paths(protected))
            layers["namespaces"] = ("private PID, mount, IPC, network, UTS and user namespaces (bubblewrap): only the "
                                    "interpreter and the scratch folder are visible")
        elif isolation == "namespace":
            raise SandboxError(f"--isolation namespace: {why}")
        else:
            layers["namespaces"] = f"not in force: {why}"
            if not root:
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
    sandbox = Sandbox("namespace" if bwrap else "user", "", layers, uid=uid, gid=gid, killer=killer, bwrap=bwrap,
                      tmpfs_size=tmpfs_size, cgroups=cgroups, protected=closed_paths(protected) if root else [])
    if root:
        # Orphans of the student's (a double fork) come to the grader, which reaps them: a zombie reparented
        # to an init that does not reap would hold one of the student user's process slots for good.
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
        _take_lock(sandbox, user)
        survivors = sandbox.kill_user()  # whatever an earlier run may have left
        if survivors:
            sandbox.close()
            raise SandboxError(f"{len(survivors)} process(es) of '{user}' from an earlier run cannot be killed")
        if not bwrap:
            threading.Thread(target=sandbox._walk_shared, daemon=True).start()
        else:
            sandbox._shared_done.set()
    sandbox.note = "Isolation: " + "; ".join(f"{k}: {v}" for k, v in layers.items()) + "."
    return sandbox


def open_lock(name: str) -> int:
    """A root-only lock file, mp-grader-NAME.lock, in /run (else beside the grader), opened for flock."""
    folder = LOCK_FOLDER if LOCK_FOLDER.is_dir() else HERE
    return os.open(folder / f"mp-grader-{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)


def _take_lock(sandbox: Sandbox, user: str) -> None:
    """One grading run at a time per student user: the cleanup kills every process of that user."""
    fd = open_lock(user)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SandboxError(f"another grading run is using the user '{user}'; two at once would kill each "
                           "other's processes. Wait for it to finish.") from None
    sandbox._lock = fd


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


@contextmanager
def closed_to_others(paths: list[Path], uids: list[int]) -> Iterator[list[str]]:
    """Close `paths` to everyone but their owner for the duration, and restore their modes afterwards, but
    only once no process of any of `uids` is left (else they stay closed). Yields a list that holds, at the
    end, what kept them closed; the caller may add its own reason before the end to keep them closed."""
    saved: dict[Path, int] = {}
    kept: list[str] = []
    for path in paths:
        saved[path] = stat.S_IMODE(path.lstat().st_mode)
        path.chmod(saved[path] & 0o700)
    try:
        yield kept
    finally:
        alive = [] if kept else [pid for uid in uids if not _student_gone(uid) for pid in user_processes(uid)]
        if alive:
            described = ", ".join(f"{pid} ({_describe(pid)})" for pid in alive[:3])
            kept.append(f"a process of the student user was still running after grading: {described}")
        if not kept:
            for path, mode in saved.items():
                path.chmod(mode)


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


def _student_gone(uid: int) -> bool:
    """True once no process of `uid` is left. Killed ones still exiting (a probe's namespace init that its
    parent's death killed, say) run no code of their own: they get EXIT_SECONDS to be gone. False at once
    while one still runs its own code."""
    deadline = time.monotonic() + EXIT_SECONDS
    while alive := user_processes(uid):
        if not all(_doomed(pid) for pid in alive) or time.monotonic() > deadline:
            return False
        _reap_orphans(spare=-1)
        time.sleep(0.02)
    return True


@dataclass
class Cleanup:
    """What the end of a question found."""

    leftovers: int = 0  # processes besides the child itself, killed
    removed: list[str] = field(default_factory=list)  # files and IPC objects the student left, removed
    note: str = ""  # for staff: a limit of the cleanup


class Jail:
    """One question's confinement: a root-owned scratch folder, the processes started in it, their memory."""

    def __init__(self, sandbox: Sandbox, question: str, memory_limit: int):
        self.sandbox, self.memory_limit = sandbox, memory_limit
        self.cgroup = MemoryCgroup.create(memory_limit) if sandbox.cgroups else None
        self.scratch = Path(tempfile.mkdtemp(prefix=f"grader-{question}-"))
        os.chmod(self.scratch, 0o755)
        self.submission, self.home = self.scratch / "submission", self.scratch / "home"
        for folder in (self.submission, self.home):
            folder.mkdir(mode=0o700)
            if sandbox.uid is not None and sandbox.gid is not None:
                os.chown(folder, sandbox.uid, sandbox.gid)
        self.proc: subprocess.Popen | None = None
        self.init_pid: int | None = None  # the namespace's init, as the grader sees it
        self.namespace: tuple[int, int] | None = None
        self._leftovers = 0
        self._tmpfs = _tmpfs_devices() if sandbox.drops_user and not sandbox.bwrap and not self.cgroup else set()
        self._baseline = self._shared_tmpfs_used()

    def _shared_tmpfs_used(self) -> dict[int, int]:
        if not self._tmpfs:
            return {}
        used = {}
        for folder in KNOWN_SHARED:
            try:
                dev = os.stat(folder).st_dev
            except OSError:
                continue
            if dev in self._tmpfs:
                used[dev] = _used_bytes(str(folder))
        return used

    def env(self) -> dict[str, str]:
        tmp = "/tmp" if self.sandbox.bwrap else str(self.home)
        return {"HOME": str(self.home), "TMPDIR": tmp, "GRADER_SANDBOX": self.sandbox.marker}

    def run_as_student(self, program: list[str], timeout: float, env: dict[str, str]) -> subprocess.CompletedProcess:
        """Run a helper of the grader's (e.g. the upload copy) as the student user, with no namespaces."""
        argv = _launch_argv({"uid": self.sandbox.uid, "gid": self.sandbox.gid}, program) if self.sandbox.drops_user else program
        return subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                              check=False, cwd=self.scratch, start_new_session=True)

    def start(self, program: list[str], env: dict[str, str], pass_fds: tuple[int, ...]) -> subprocess.Popen:
        """Start `program` in the jail: in its namespaces, as the student, in its cgroup."""
        info_read = None
        if self.sandbox.bwrap:
            info_read, info_write = os.pipe()
            args = list(self.sandbox.bwrap)
            for mount in ("/tmp", "/dev/shm"):
                args += (["--size", str(self.memory_limit)] if self.sandbox.tmpfs_size else []) + ["--tmpfs", mount]
            args += ["--remount-ro", "/dev", "--ro-bind", str(self.scratch), str(self.scratch),
                     "--bind", str(self.submission), str(self.submission), "--bind", str(self.home), str(self.home),
                     "--remount-ro", "/", "--chdir", str(self.submission), "--info-fd", str(info_write), "--"]
            program, pass_fds = args + program, (*pass_fds, info_write)
        if self.sandbox.drops_user or self.cgroup:
            options = {"uid": self.sandbox.uid, "gid": self.sandbox.gid,
                       "cgroup_procs": str(self.cgroup.procs_file) if self.cgroup else None}
            program = _launch_argv(options, program)
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
            self.init_pid = int(json.loads(data)["child-pid"])
            st = os.stat(f"/proc/{self.init_pid}/ns/pid")
            self.namespace = (st.st_dev, st.st_ino)
        except (ValueError, KeyError, OSError):
            self.init_pid = None  # bubblewrap failed to start: its output says why; the user/cgroup kill remains

    def members(self) -> list[int]:
        """Every live process of the jail that the grader can find, the child and bubblewrap included."""
        found: set[int] = set()
        if self.cgroup:
            found.update(self.cgroup.pids())
        if self.sandbox.uid is not None:
            found.update(user_processes(self.sandbox.uid))
        if self.namespace:
            found.update(_namespace_processes(self.namespace))
        if self.proc is not None and not self.sandbox.drops_user and not self.sandbox.bwrap:
            found.update(_session_processes(self.proc.pid, self.sandbox.marker))
        if self.proc is not None and self.proc.poll() is None:
            found.add(self.proc.pid)
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
        used = memory_bytes(pids, self.memory_limit, deadline) + _memfd_bytes(pids, deadline)
        if self.init_pid:  # the private /tmp and /dev/shm
            used += sum(_used_bytes(f"/proc/{self.init_pid}/root{m}") for m in ("/tmp", "/dev/shm"))
        now = self._shared_tmpfs_used()
        return used + sum(max(0, now.get(dev, 0) - before) for dev, before in self._baseline.items())

    def oom_killed(self) -> bool:
        return bool(self.cgroup and self.cgroup.oom_kills())

    def _kill_round(self) -> None:
        if self.cgroup:
            self.cgroup.kill()
        if self.init_pid:
            try:  # the namespace's init: its death takes every process of the namespace with it
                os.kill(self.init_pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.sandbox.drops_user:
            self.sandbox.kill_user()
        elif not self.sandbox.bwrap:
            for pid in self.members():
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        _reap_orphans(spare=self.proc.pid if self.proc else -1)

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
            # A killed process still exiting runs no code of its own; it only needs time to be gone.
            running = [p for p in alive if not _doomed(p)]
            waited = time.monotonic() - started
            if not alive or (running and waited > KILL_SECONDS) or waited > EXIT_SECONDS:
                break
        if alive:
            described = ", ".join(f"{pid} ({_describe(pid)})" for pid in alive[:5])
            self.sandbox.breach = (f"{len(alive)} process(es) of the student survived every attempt to kill them "
                                   f"({described}); grading stopped, nothing was restored. Staff must look.")
            raise ContainmentError(self.sandbox.breach)
        if self.cgroup and not self.cgroup.remove():
            result.note = f"could not remove the memory cgroup {self.cgroup.path}"
        if self.sandbox.uid is not None:
            if not self.sandbox.bwrap:
                folders, complete = self.sandbox.shared_folders()
                result.removed += self.sandbox.sweep(folders)
                if not complete:
                    result.note = ("the search for world-writable folders did not finish; only those found were "
                                   "checked for leftover files")
            result.removed += _remove_sysv_ipc(self.sandbox.uid)
        shutil.rmtree(self.scratch, ignore_errors=True)
        return result
