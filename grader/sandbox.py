"""Where and as whom student code runs, and how everything it leaves behind is removed.

Two levels, chosen once per grading run:
- "user" (the grader runs as root, as on Gradescope and in Docker): the child runs as an unprivileged
  user created for it, in a scratch folder it owns, with the labels, config and grader closed to it;
  afterwards every process of that user is killed and its files in the shared temp folders (and in the
  results folder) removed.
- "process" (not root, e.g. a student's laptop): the child still runs in its own process, session and
  scratch folder, with its network and signals restricted by its seccomp filter, but as the grader's own
  user, so it could read files that user can read. The grader says so plainly.
"""
from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

DEFAULT_USER = "grader-student"
SHARED_TMP = (Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"))
PAGE = os.sysconf("SC_PAGE_SIZE")


class SandboxError(RuntimeError):
    """The isolation asked for cannot be had here."""


@dataclass(frozen=True)
class Sandbox:
    mode: str  # "user" or "process"
    note: str  # what the grader tells people about the isolation in force
    uid: int | None = None
    gid: int | None = None
    marker: str = ""  # an environment token that identifies the child's processes in "process" mode


def _inaccessible_ancestor(path: Path) -> Path | None:
    """The first folder on the way to `path` that other users cannot enter, if any."""
    for folder in [*reversed(path.resolve().parents)]:
        if not os.stat(folder).st_mode & stat.S_IXOTH:
            return folder
    return None


def _become_subreaper() -> None:
    """Orphaned descendants (a double fork, a setsid daemon) are reparented to the grader, not to init,
    so that they stay findable as its descendants and are killed with the run."""
    import ctypes

    PR_SET_CHILD_SUBREAPER = 36
    ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _undumpable() -> None:
    """Make the grader non-dumpable: a same-user child can then neither ptrace it nor open /proc/<pid>/mem."""
    import ctypes

    PR_SET_DUMPABLE = 4
    ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def _process_mode(note: str, marker: str) -> Sandbox:
    """The child will share the grader's user: shield the grader first (see _undumpable, _become_subreaper)."""
    _undumpable()
    _become_subreaper()
    return Sandbox("process", note, marker=marker)


def prepare(isolation: str = "auto", user: str = DEFAULT_USER) -> Sandbox:
    """Pick the isolation level: "user" when root (or asked for), else "process"; explain any fallback.

    In "process" mode this also makes the grader's own process non-dumpable and a subreaper."""
    marker = secrets.token_hex(8)
    if isolation == "process" or (isolation == "auto" and os.geteuid() != 0):
        why = "asked for" if isolation == "process" else "the grader is not running as root"
        return _process_mode(f"Isolation: student code ran in a separate process under the grader's own user "
                             f"({why}). The stronger isolation, a separate unprivileged user that cannot read the "
                             "labels, needs root, as in the Docker image or on Gradescope.", marker)
    if os.geteuid() != 0:
        raise SandboxError("--isolation user needs root")
    blocked = next(filter(None, (_inaccessible_ancestor(Path(p)) for p in
                                 (os.path.realpath(sys.executable), sys.prefix, sys.base_prefix))), None)
    if blocked is not None:
        note = (f"Isolation: student code ran as the grader's own user, because Python lives under {blocked}, "
                f"which the unprivileged user '{user}' cannot enter. Install Python where all users can run it "
                "(as the Docker image does) to get the separate-user isolation.")
        if isolation == "user":
            raise SandboxError(note)
        return _process_mode(note, marker)
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user],
                       check=True, capture_output=True)
        entry = pwd.getpwnam(user)
    return Sandbox("user", f"Isolation: student code ran as the unprivileged user '{user}', without network.",
                   uid=entry.pw_uid, gid=entry.pw_gid, marker=marker)


@contextmanager
def protected(sandbox: Sandbox, paths: list[Path]) -> Iterator[None]:
    """Close these files and folders to everyone but their owner while grading, then restore their modes."""
    if sandbox.mode != "user":
        yield
        return
    saved = {}
    for path in paths:
        if path.exists():
            saved[path] = stat.S_IMODE(path.stat().st_mode)
            path.chmod(saved[path] & 0o700)
    try:
        yield
    finally:
        for path, mode in saved.items():
            path.chmod(mode)


def make_scratch(sandbox: Sandbox, question: str) -> Path:
    scratch = Path(tempfile.mkdtemp(prefix=f"grader-{question}-"))
    if sandbox.mode == "user":
        os.chown(scratch, sandbox.uid, sandbox.gid)
    return scratch


def give(sandbox: Sandbox, path: Path) -> None:
    """Hand a file or tree in the scratch folder to the student user."""
    if sandbox.mode != "user":
        return
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.chown(name, sandbox.uid, sandbox.gid, follow_symlinks=False)


def popen_kwargs(sandbox: Sandbox) -> dict:
    kwargs: dict = {"start_new_session": True}
    if sandbox.mode == "user":
        kwargs.update(user=sandbox.uid, group=sandbox.gid, extra_groups=[], umask=0o077)
    return kwargs


def _live_uid(pid: str) -> int | None:
    """The real uid of a process that is not a zombie (a zombie can do nothing and waits to be reaped)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("State:") and line.split()[1] == "Z":
                    return None
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _stat(pid: str) -> tuple[int, int, str] | None:
    """(parent pid, session id, state) from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[1]), int(fields[3]), fields[0]
    except (OSError, IndexError, ValueError):
        return None


def _has_marker(pid: str, marker: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f"GRADER_SANDBOX={marker}".encode() in f.read().split(b"\0")
    except OSError:
        return False


def members(sandbox: Sandbox, session: int, thorough: bool = False) -> list[int]:
    """Live processes of this run. User mode: every process of the student user. Process mode: the
    child's session and every descendant of the grader (which is a subreaper, so orphans stay in its
    tree even after a setsid), and, when `thorough`, anything carrying the run's environment marker."""
    me = os.getpid()
    pids = [pid for pid in os.listdir("/proc") if pid.isdigit() and int(pid) != me]
    if sandbox.mode == "user":
        return [int(pid) for pid in pids if _live_uid(pid) == sandbox.uid]
    stats = {int(pid): st for pid in pids if (st := _stat(pid)) is not None and st[2] != "Z"}
    found = set()
    for pid, (_, sid, _) in stats.items():
        chain, seen = pid, set()
        while chain in stats and chain not in seen and chain != me:
            seen.add(chain)
            chain = stats[chain][0]
        if sid == session or chain == me or (thorough and _has_marker(str(pid), sandbox.marker)):
            found.add(pid)
    return sorted(found)


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))
    except (OSError, StopIteration, ValueError):
        return _rss(pid)


def memory_bytes(pids: list[int], limit: int, deadline: float) -> int:
    """Memory of these processes together, never overestimated. The cheap sum of resident sets counts
    pages that forked processes share once per process; only when it exceeds `limit` is the fair (and
    slow) sum of proportional set sizes taken, where shared pages count once. That sum stops early at
    `limit` or at `deadline` (time.monotonic()), so a fork bomb cannot stall the time limit."""
    rss = sum(_rss(pid) for pid in pids)
    if rss <= limit:
        return rss
    pss = 0
    for pid in pids:
        pss += _pss(pid)
        if pss > limit or time.monotonic() > deadline:
            break
    return pss


def kill_all(sandbox: Sandbox, session: int) -> int:
    """SIGKILL every process of the run, in rounds until none is left (a fork loop may refill a round);
    returns how many are still alive after the last round (0 unless something resists).

    In user mode one kill(-1) issued as the student user reaches all of its processes in a single call,
    which a fork bomb cannot outrun the way it can outrun signals sent one pid at a time. Orphans that
    were reparented to the grader (a subreaper) are reaped here; the child itself (its pid is `session`)
    is left to its Popen to reap."""
    for _ in range(50):
        pids = members(sandbox, session, thorough=True)
        if not pids:
            return 0
        if sandbox.mode == "user":
            subprocess.run([sys.executable, "-I", "-c", "import os, signal; os.kill(-1, signal.SIGKILL)"],
                           user=sandbox.uid, group=sandbox.gid, extra_groups=[], check=False)
        else:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        time.sleep(0.02)
        _reap_orphans(spare=session)
    return len(members(sandbox, session, thorough=True))


def _reap_orphans(spare: int) -> None:
    """Collect the exit status of dead processes reparented to the grader, except `spare`."""
    me = os.getpid()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        st = _stat(pid)
        if st is not None and st[0] == me and st[2] == "Z" and int(pid) != spare:
            try:
                os.waitpid(int(pid), os.WNOHANG)
            except ChildProcessError:
                pass


def remove_leftover_files(sandbox: Sandbox, folders: tuple[Path, ...] = SHARED_TMP) -> list[str]:
    """Files the student user left at the top of `folders` (user mode only: in process mode they cannot
    be told from the grader's own); the scratch folder is removed anyway."""
    if sandbox.mode != "user":
        return []
    removed = []
    for folder in folders:
        try:
            entries = list(folder.iterdir())
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.lstat().st_uid != sandbox.uid:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink()
                removed.append(str(entry))
            except OSError:
                pass
    return removed
