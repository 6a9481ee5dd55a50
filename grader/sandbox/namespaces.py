"""The namespace layer: bubblewrap's arguments, and whether bubblewrap works here.

Guarantee: with these arguments the student's processes get private PID, mount, IPC, network, UTS and
user namespaces (cgroup where the kernel allows), no new user namespaces inside them (where bubblewrap
can refuse them), and a file system of read-only system folders, the interpreter's folders, a few files
of /etc and, per question (jail.py), the scratch folder; never a folder that holds a protected path.
The private /tmp and /dev/shm are laid first, so nothing the child needs is hidden under them wherever it
lives (a clone under /tmp). Killing the namespace's init ends every process in it. Relies on:
unprivileged user namespaces (or root), which default Docker and Gradescope refuse; the probe, which runs
exactly a question's arguments and checks that the child's interpreter sees every folder of its sys.path,
finds out before any student code runs, as does a check that root may hold the question's first process
(CAP_SYS_PTRACE, which Docker drops by default).
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from grader.sandbox.closing import closed_paths
from grader.sandbox.errors import SandboxError
from grader.sandbox.scratch import lay_out
from grader.sandbox.users import launch_argv
from grader.text import printable

ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "passwd", "group", "nsswitch.conf", "localtime",
             "os-release", "alternatives", "mime.types", "fonts", "ssl")
ROOT_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")


CAP_SYS_PTRACE = 19


def has_capability(number: int) -> bool:
    """Whether this process has capability `number` in its effective set (/proc/self/status's CapEff)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> number & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


@functools.cache
def _child_sys_path() -> list[str]:
    """sys.path of the child's interpreter as it starts it (`python -I`: site-packages and .pth entries,
    no PYTHONPATH, nothing the grader itself added at run time)."""
    proc = subprocess.run([sys.executable, "-I", "-c", "import json, sys; print(json.dumps(sys.path))"],
                          capture_output=True, text=True, check=True, timeout=60, env={}, cwd="/")
    return json.loads(proc.stdout)


def interpreter_paths(protected: list[Path]) -> list[Path]:
    """Folders the child's interpreter needs (prefixes, site-packages), outside the system folders that are
    mounted anyway. A sys.path entry that holds anything protected (a checkout installed with
    `pip install -e`) is left out; an interpreter prefix that does is refused."""
    system = [Path("/") / d for d in ROOT_DIRS]
    prefixes = {Path(p).resolve() for p in (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix)}
    prefixes.add(Path(os.path.realpath(sys.executable)).parent)
    entries = {Path(p).resolve() for p in _child_sys_path() if p and Path(p).is_dir()}
    keep = set()
    for path in prefixes | entries:
        if any(path.is_relative_to(s) for s in system):
            continue
        if any(p.is_relative_to(path) for p in protected):
            if path in prefixes:
                raise SandboxError(f"the interpreter's folder {path} holds the grader's files or the reference data; "
                                   "use an interpreter installed elsewhere")
            continue
        keep.add(path)
    return sorted(p for p in keep if not any(q != p and p.is_relative_to(q) for q in keep))


@functools.cache
def _help_text(program: str) -> str:
    return subprocess.run([program, "--help"], capture_output=True, text=True, check=False, timeout=30).stdout


@dataclass(frozen=True)
class Bwrap:
    """bubblewrap's arguments for one run, less each question's folders: the program with its namespace
    options, and the read-only mounts (system and interpreter folders, /etc files, covers, devices)."""

    program: tuple[str, ...]
    mounts: tuple[str, ...]
    tmpfs_size: bool  # this bubblewrap can cap the size of a tmpfs (--size, from 0.8)

    def argv(self, memory_limit: int, scratch: Path, writable: Sequence[Path], info_fd: int | None = None) -> list[str]:
        """The whole command line before the program, the same for a question and for the probe. The private
        /tmp and /dev/shm are laid first and everything else on top of them, so a folder the child needs
        (an interpreter in a clone under /tmp, the scratch folder) is never hidden by them."""
        size = ["--size", str(memory_limit)] if self.tmpfs_size else []
        args = [*self.program, "--dev", "/dev", *size, "--tmpfs", "/dev/shm", *size, "--tmpfs", "/tmp",
                "--proc", "/proc", *self.mounts, "--remount-ro", "/dev", "--ro-bind", str(scratch), str(scratch)]
        for folder in writable:
            args += ["--bind", str(folder), str(folder)]
        args += ["--remount-ro", "/", "--chdir", str(writable[0] if writable else scratch)]
        return args + (["--info-fd", str(info_fd)] if info_fd is not None else []) + ["--"]


def bwrap_base(paths: list[Path], hidden: Sequence[Path] = ()) -> Bwrap:
    """bubblewrap's arguments for a run whose child needs `paths` (the interpreter's folders). Those of
    `hidden` (the protected paths) that lie inside a system folder it mounts are covered: a folder by an
    empty read-only tmpfs, a file by /dev/null, whatever their modes."""
    bwrap = shutil.which("bwrap") or "bwrap"
    helptext = _help_text(bwrap)
    program = [bwrap, "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-net", "--unshare-uts",
               "--unshare-cgroup-try", "--die-with-parent", "--new-session"]
    if "--disable-userns" in helptext:
        program.append("--disable-userns")
    args: list[str] = []
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
    mounted = [Path("/") / name for name in ROOT_DIRS] + [Path("/etc") / name for name in ETC_FILES]
    for path in sorted(p for p in hidden if any(p.is_relative_to(m.resolve()) for m in mounted)):
        args += ["--tmpfs", str(path), "--remount-ro", str(path)] if path.is_dir() else ["--ro-bind", "/dev/null", str(path)]
    gpus = sorted(str(p) for p in Path("/dev").glob("nvidia*") if not p.is_dir())
    for device in gpus:
        args += ["--dev-bind", device, device]
    args += ["--ro-bind", "/sys", "/sys"] if gpus else ["--ro-bind-try", "/sys/devices/system/cpu", "/sys/devices/system/cpu"]
    return Bwrap(tuple(program), tuple(args), "--size" in helptext)


# Run inside the probe's sandbox: which of the folders the child's imports need it cannot see.
_SEES = "import json, os, sys; print(json.dumps([p for p in sys.argv[1:] if not os.path.isdir(p)]))"


def probe_bwrap(uid: int | None, gid: int | None, protected: Sequence[Path] = ()) -> str | None:
    """None when bubblewrap works here as the student user with exactly the arguments a question gets
    (the run's mounts, a scratch folder where the jail makes one, the private /tmp), and the child's
    interpreter sees every folder of its sys.path it needs; else why not."""
    if not shutil.which("bwrap"):
        return "bubblewrap (bwrap) is not installed"
    if uid is not None and uid != os.geteuid() and not has_capability(CAP_SYS_PTRACE):
        # The question's init runs as the student user in a user namespace of its own: only with this
        # capability can the grader open its /proc/PID/ns/pid and pidfd to hold it and kill it later
        # (jail.py), and without that every question would stop as the grader's problem.
        return ("this grader lacks CAP_SYS_PTRACE, without which it cannot hold a sandbox's first process (which "
                "runs as the student user) to kill it later: in Docker, start the container with --cap-add SYS_PTRACE")
    try:
        base = bwrap_base(interpreter_paths(list(protected)), closed_paths(list(protected)))
    except SandboxError as exc:
        return str(exc)
    needed = [p for p in _child_sys_path() if p and Path(p).is_dir()
              and not any(q.is_relative_to(Path(p).resolve()) for q in protected)]
    try:
        scratch = Path(tempfile.mkdtemp(prefix="grader-probe-"))
    except OSError as exc:
        return f"no scratch folder could be made for the probe: {exc}"
    try:
        writable = lay_out(scratch, uid, gid)
        program = base.argv(2**26, scratch, writable) + [sys.executable, "-I", "-c", _SEES, *needed]
        if uid is not None:
            program = launch_argv({"uid": uid, "gid": gid}, program)
        try:
            proc = subprocess.run(program, capture_output=True, text=True, timeout=30, check=False,
                                  stdin=subprocess.DEVNULL, cwd="/")
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"bubblewrap could not run: {exc}"
    except OSError as exc:
        return f"the probe's scratch folder could not be laid out: {exc}"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if proc.returncode != 0:
        return f"bubblewrap cannot make namespaces here ({printable(proc.stderr.strip()[:200])})"
    try:
        hidden = json.loads(proc.stdout)
    except ValueError:
        hidden = ["?"]
    if hidden:
        return (f"bubblewrap's sandbox hides folders the interpreter needs: "
                f"{printable(', '.join(map(str, hidden))[:300], name=True)}")
    return None
