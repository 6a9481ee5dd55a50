"""The student's upload: checked before anything reads it, staged by the grader, copied by the student user.

First the grader only lstat()s the upload (no file opened, no link followed) and refuses, as the
student's error with a clear message, anything but regular files and folders within the configured caps
on count, total size (apparent size, so a sparse file counts at its full length) and depth. Then it
stages a copy in a folder of its own (files opened with O_NOFOLLOW and checked again as regular files,
so nothing swapped in since can make it read a FIFO, a device or a link), which only root and the student
user may read. Each question's working copy is then made from the staging folder by the student user itself, in a
process of its own with a time limit: root never writes into a folder the student owns.
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from grader.text import printable

# Bytes of a path inside the upload. The deepest copy adds a scratch folder's ~60 bytes, and every path the
# kernel takes is at most 4096 (PATH_MAX): a longer one passes the other caps, then fails the copy.
MAX_PATH_BYTES = 1024
KINDS = {stat.S_IFIFO: "a named pipe (FIFO)", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
         stat.S_IFBLK: "a block device", stat.S_IFLNK: "a symbolic link"}

# Run as the student user: `python -I -S -c COPY SOURCE DESTINATION` (the grader's own folder is closed to
# that user, so the code travels on the command line). Exit 3 with a message when a file cannot be read.
COPY = r"""
import os, shutil, sys
source, destination = sys.argv[1], sys.argv[2]
def refuse(exc):
    raise exc
try:
    for folder, dirs, files in os.walk(source, onerror=refuse):
        target = os.path.join(destination, os.path.relpath(folder, source))
        os.makedirs(target, mode=0o700, exist_ok=True)
        for name in files:
            shutil.copyfile(os.path.join(folder, name), os.path.join(target, name), follow_symlinks=False)
except PermissionError as exc:
    print(os.path.relpath(exc.filename or "?", source), file=sys.stderr)
    sys.exit(3)
"""


class UploadError(Exception):
    """The upload cannot be graded; the message tells the student what to change."""


@dataclass(frozen=True)
class UploadLimits:
    max_files: int
    max_bytes: int
    max_depth: int
    max_file_bytes: int | None = None  # one file's cap (the weights), None for none

    def within(self, size: int, budget: int) -> bool:
        """Whether a file of `size` bytes, with `budget` bytes of the total cap left, is within the caps: past
        them the upload is refused on its sizes alone, whatever its bytes (which need not be read)."""
        return size <= budget and (self.max_file_bytes is None or size <= self.max_file_bytes)

    @staticmethod
    def mib(n: int) -> str:
        return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n} bytes"


def check_upload(root: Path, limits: UploadLimits) -> None:
    """Refuse (UploadError) an upload that is not plain files and folders within `limits`."""
    try:
        if not stat.S_ISDIR(os.lstat(root).st_mode):
            raise UploadError("the submission is not a folder")
    except FileNotFoundError:
        raise UploadError("no submission was found") from None
    stack, count, total = [(root, 0)], 0, 0
    while stack:
        folder, depth = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                relative = os.path.relpath(entry.path, root)
                where = printable(relative, name=True)
                if len(os.fsencode(relative)) > MAX_PATH_BYTES:
                    raise UploadError(f"{where[:80]}... is a path of {len(os.fsencode(relative))} bytes inside the "
                                      f"submission; at most {MAX_PATH_BYTES} can be graded: shorten its names")
                st = entry.stat(follow_symlinks=False)
                count += 1
                if count > limits.max_files:
                    raise UploadError(f"the submission has more than {limits.max_files} files and folders")
                if stat.S_ISDIR(st.st_mode):
                    if depth + 1 > limits.max_depth:
                        raise UploadError(f"{where}: folders nest deeper than {limits.max_depth} levels")
                    stack.append((Path(entry.path), depth + 1))
                elif stat.S_ISREG(st.st_mode):
                    total += st.st_size
                    if limits.max_file_bytes is not None and st.st_size > limits.max_file_bytes:
                        raise UploadError(f"{where} is {st.st_size / 2**20:.1f} MiB, more than the "
                                          f"{limits.mib(limits.max_file_bytes)} one file may have")
                    if total > limits.max_bytes:
                        raise UploadError(f"the submission's files add up to more than {limits.mib(limits.max_bytes)} "
                                          f"(reached at {where})")
                else:
                    kind = KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
                    raise UploadError(f"{where} is {kind}: only regular files and folders can be graded"
                                      + (" (upload the file itself)" if stat.S_ISLNK(st.st_mode) else ""))


def walk(root: Path) -> Iterator[tuple[Path, list[str], list[str]]]:
    """os.walk's walk from the top (each folder's folders and files, sorted; links not followed; unreadable
    folders skipped), on a stack of its own: os.walk recurses once per level, and a folder the student
    nested a few thousand deep would raise RecursionError, which no OSError handler catches."""
    stack = [root]
    while stack:
        top = stack.pop()
        try:
            with os.scandir(top) as it:
                entries = [(e.name, _is_folder(e)) for e in it]
        except OSError:
            continue
        dirs = sorted(name for name, folder in entries if folder)
        yield top, dirs, sorted(name for name, folder in entries if not folder)
        stack += [top / name for name in reversed(dirs)]


def _is_folder(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def tree_bytes(root: Path) -> int:
    """Bytes a copy of the checked upload at `root` takes, each file rounded up to whole 4 KiB blocks."""
    return sum(-(-p.lstat().st_size // 4096) * 4096 + 4096 for p in root.rglob("*"))


def open_regular(path: str | Path) -> tuple[int, os.stat_result] | None:
    """(descriptor, status) of `path` opened for reading when it is a regular file, checked before and after
    the open (the same file both times), else None. Nothing else is ever opened: a device node's open can
    act on the device, a FIFO's would block, a link is not followed. OSError from the look or the open passes."""
    named = os.lstat(path)
    if not stat.S_ISREG(named.st_mode):
        return None
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (named.st_dev, named.st_ino):
        os.close(fd)
        return None
    return fd, st


def _copy_file(source: str, destination: str, budget: int) -> int:
    """Copy one regular file, refusing anything else that may have taken its place; returns its size."""
    opened = open_regular(source)
    if opened is None or opened[1].st_size > budget:
        if opened is not None:
            os.close(opened[0])
        raise UploadError(f"{printable(source, name=True)} changed while it was being copied")
    fd, st = opened
    try:
        out = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            with os.fdopen(os.dup(fd), "rb") as src, os.fdopen(os.dup(out), "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        finally:
            os.close(out)
        return st.st_size
    finally:
        os.close(fd)


def stage_upload(root: Path, limits: UploadLimits, reader: tuple[int, int] | None = None) -> Path:
    """Check the upload, then copy it into a new folder of the grader's, TOP/upload; returns it. The caller
    removes it with unstage(). `reader`: the student user (uid, gid) whose copy step reads it, and who alone
    besides root may (TOP root's with mode 0711, so that the sweep of the student's leftovers, which goes by
    owner and group, never takes it; TOP/upload 0750, the student's group). The caller holds that user's lock
    (sandbox.prepare), so any staging folder of that user's still here was left by a grader that was killed,
    and is removed first: a submission must not stay for whoever runs as that user next. Without `reader`,
    this process's user alone (0700). Raises UploadError for an upload that cannot be graded."""
    check_upload(root, limits)
    prefix = f"grader-upload-{reader[0]}-" if reader else "grader-upload-"
    if reader:
        for stale in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
            shutil.rmtree(stale, ignore_errors=True)
    top = Path(tempfile.mkdtemp(prefix=prefix))  # mode 0700
    staging = top / "upload"
    try:
        os.mkdir(staging, 0o700)
        if reader:
            os.chmod(top, 0o711)
            os.chown(staging, 0, reader[1])
            os.chmod(staging, 0o750)
        budget = limits.max_bytes
        for folder, dirs, files in os.walk(root):
            target = staging / os.path.relpath(folder, root)
            for name in dirs:
                os.mkdir(target / name, 0o755)
            for name in files:
                budget -= _copy_file(os.path.join(folder, name), str(target / name), budget)
        return staging
    except BaseException:
        shutil.rmtree(top, ignore_errors=True)
        raise


def unstage(staging: Path) -> None:
    """Remove what stage_upload() made."""
    shutil.rmtree(staging.parent, ignore_errors=True)


def copy_upload(source: Path, destination: Path, run_as_student, timeout: float) -> None:
    """Copy a checked upload into `destination` (a folder the student user owns) as the student user.
    `run_as_student(program, timeout, env)` runs a program as that user (sandbox.Jail.run_as_student)."""
    try:
        proc = run_as_student([sys.executable, "-I", "-S", "-c", COPY, str(source), str(destination)], timeout,
                              {"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    except subprocess.TimeoutExpired:
        raise UploadError(f"copying the submission took longer than {timeout:.0f} s") from None
    if proc.returncode == 3:
        name = printable(proc.stderr.decode(errors="replace").strip()[:300], name=True)
        raise UploadError(f"{name} cannot be read: give every file of the submission read permission for all users")
    if proc.returncode != 0:
        raise RuntimeError(f"copying the submission failed ({proc.returncode}): "
                           f"{printable(proc.stderr.decode(errors='replace')[-1000:])}")
