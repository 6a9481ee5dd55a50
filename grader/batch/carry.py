"""What a batch task carries to a Dask worker that shares no file system with the batch (#29): each task the
submission itself, packed from its folder entry by entry as it lies (links, pipes and all, up to the point
where the grader would refuse it anyway), and every worker the grading inputs (the config, its checks, the
reference data) once, kept on its disk by digest. The worker lays them out again and grades them exactly as
the batch's machine would: the same grader sees the same entries, so the same grade."""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from grader.config import GraderConfig
from grader.text import printable
from grader.upload import MAX_PATH_BYTES, UploadLimits, open_regular

MAX_SPARSE = 2**40  # a worker whose file system takes no longer file makes an over-cap file this long


class CarryError(Exception):
    """The batch could not read what it was to carry; the message says what."""


@dataclass(frozen=True)
class Item:
    """One entry of a submission folder: its path (relative, bytes), kind and permission bits, and a regular
    file's bytes or a link's target. A file over the upload caps keeps only its size."""

    path: bytes
    kind: int  # stat.S_IFMT of its lstat
    mode: int  # stat.S_IMODE
    size: int = 0
    content: bytes = b""


@dataclass(frozen=True)
class Carried:
    """A submission as a task carries it: its name, its digest as the batch took it (the stored result's key),
    and its entries, the top one first (path b".")."""

    name: str
    digest: str
    items: tuple[Item, ...]


def pack_submission(name: str, source: Path, digest: str, limits: UploadLimits) -> Carried:
    """`source` (an unpacked submission folder, or whatever lies at its path) entry by entry, as far as the
    grader's upload check would look: past the caps on count, depth, path length and bytes it refuses, so
    entries beyond them are left out and a file over the byte caps keeps only its size. Raises CarryError for
    a file the batch cannot read."""
    items: list[Item] = []
    budget = limits.max_bytes

    def add(path: Path, relative: bytes) -> int | None:
        """Add `path`; its kind (None when it is gone)."""
        nonlocal budget
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        kind, size, content = stat.S_IFMT(st.st_mode), st.st_size, b""
        if kind == stat.S_IFLNK:
            content = os.fsencode(os.readlink(path))
        elif kind == stat.S_IFREG and limits.within(size, budget):
            content = _read(path, size)
            budget -= size
        items.append(Item(relative, kind, stat.S_IMODE(st.st_mode) & ~(stat.S_ISUID | stat.S_ISGID),
                          size, content))
        return kind

    if add(source, b".") != stat.S_IFDIR:
        return Carried(name, digest, tuple(items))
    stack = [(source, b"", 0)]
    while stack and len(items) <= limits.max_files + 1:
        folder, prefix, depth = stack.pop()
        try:
            names = sorted(os.listdir(os.fsencode(folder)))
        except OSError as exc:
            raise CarryError(f"{printable(str(folder), name=True)} could not be read by the batch: {exc.strerror}") from None
        for entry in names:
            if len(items) > limits.max_files + 1:  # one past the cap: the grader refuses it there
                break
            relative = prefix + entry
            kind = add(folder / os.fsdecode(entry), relative)
            if (kind == stat.S_IFDIR and depth + 1 <= limits.max_depth and len(relative) <= MAX_PATH_BYTES
                    and len(items) <= limits.max_files + 1):
                stack.append((folder / os.fsdecode(entry), relative + b"/", depth + 1))
    return Carried(name, digest, tuple(items))


def _read(path: Path, size: int) -> bytes:
    try:
        opened = open_regular(path)
    except OSError as exc:
        raise CarryError(f"{printable(str(path), name=True)} could not be read by the batch: {exc.strerror}") from None
    if opened is None:
        raise CarryError(f"{printable(str(path), name=True)} changed while the batch read it")
    with os.fdopen(opened[0], "rb") as f:
        return f.read(size)


def lay_out(carried: Carried, root: Path) -> Path:
    """Make `carried` again at `root` (which must not exist; its parent is private to the worker): every
    entry of its kind, with its permission bits, a link's target as it was (never followed here: each entry
    is made relative to its folder's descriptor), a device node as the kernel's unused number 0:0, no
    set-user or set-group bit (made by root here, such a file would run as root; the grader copies without
    them anyway). Nothing is made for a submission that was missing. Returns `root`."""
    if not carried.items:
        return root
    top = carried.items[0]
    _make_in(root.parent, os.fsencode(root.name), top)
    if top.kind != stat.S_IFDIR:
        return root
    folders = [(b"", top.mode)]
    for item in carried.items[1:]:
        where, _, entry = item.path.rpartition(b"/")
        if not entry or entry in (b".", b"..") or item.path.startswith(b"/"):
            raise CarryError(f"a carried entry has no place in a folder: {item.path!r}")
        _make_in(root, entry, item, where)
        if item.kind == stat.S_IFDIR:
            folders.append((item.path, item.mode))
    for path, mode in reversed(folders):  # deepest first: a closed folder's entries are made before it closes
        fd = _open_folder(root, path)
        try:
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
    return root


def _open_folder(root: Path, relative: bytes) -> int:
    """A descriptor of the folder `relative` under `root`, reached one name at a time, following no link."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    for name in [n for n in relative.split(b"/") if n]:
        try:
            inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        finally:
            os.close(fd)
        fd = inner
    return fd


def _make_in(root: Path, name: bytes, item: Item, where: bytes = b"") -> None:
    """Make `item` as `name` in the folder `where` under `root`."""
    folder = _open_folder(root, where)
    try:
        if item.kind == stat.S_IFDIR:
            os.mkdir(name, 0o700, dir_fd=folder)
        elif item.kind == stat.S_IFREG:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=folder)
            try:
                view = memoryview(item.content)
                while view:
                    view = view[os.write(fd, view):]
                try:
                    os.ftruncate(fd, item.size)  # an over-cap file: its size alone, sparse
                except OSError:  # longer than this file system takes: refused as over the cap all the same
                    os.ftruncate(fd, MAX_SPARSE)
                os.fchmod(fd, item.mode)
            finally:
                os.close(fd)
        elif item.kind == stat.S_IFLNK:
            os.symlink(item.content, name, dir_fd=folder)
        else:  # a pipe, a socket or a device node: only its kind matters to the grader, which refuses it
            device = os.makedev(0, 0) if item.kind in (stat.S_IFCHR, stat.S_IFBLK) else 0
            os.mknod(name, item.kind | 0o600, device, dir_fd=folder)
            os.chmod(name, item.mode, dir_fd=folder)
    finally:
        os.close(folder)


@dataclass(frozen=True)
class Inputs:
    """The grading inputs every worker needs once: files by relative path, where the config and the reference
    data lie among them, and their digest."""

    digest: str
    config: str
    data: str
    files: tuple[tuple[str, bytes], ...]


def input_files(folder: Path) -> list[Path]:
    """The files of the grader's package or of an input folder that a digest counts (runs.grading_key,
    cluster.code_digest, pack_inputs): not compiled caches, not the lock files a grader may keep beside it."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                  and not p.name.endswith(".lock"))


def pack_inputs(config: GraderConfig, data: Path) -> Inputs:
    """The config, its checks folder and the reference data, laid out so that the config names its checks
    folder by the same relative path (its folder is put as many levels down as that path climbs)."""
    climbs = 0
    rest: tuple[str, ...] = ()
    if config.checks is not None:
        parts = PurePosixPath(os.path.relpath(config.checks, config.source.parent)).parts
        climbs = len(parts) - len([p for p in parts if p != ".."])
        rest = parts[climbs:]
    config_at = PurePosixPath("config", *["up"] * climbs, config.source.name)
    files = {str(config_at): config.source.read_bytes()}
    if config.checks is not None:
        for path in input_files(config.checks):
            files[str(PurePosixPath("config", *rest, path.relative_to(config.checks).as_posix()))] = path.read_bytes()
    for path in input_files(data):
        files[str(PurePosixPath("data", path.relative_to(data).as_posix()))] = path.read_bytes()
    digest = hashlib.sha256()
    for name, content in sorted(files.items()):
        digest.update(f"{name}\0{len(content)}\0".encode())
        digest.update(content)
    return Inputs(digest.hexdigest(), str(config_at), "data", tuple(sorted(files.items())))


_laid_out: dict[tuple[str, str], tuple[Path, Path]] = {}
_lock = threading.Lock()


def inputs_on_disk(inputs: Inputs, folder: Path) -> tuple[Path, Path]:
    """(config, data) of `inputs` under `folder` (the worker's own, closed to others), written once per digest
    and worker process; a half-written copy is never used (written aside, then renamed)."""
    with _lock:
        known = _laid_out.get((str(folder), inputs.digest))
        if known is not None:
            return known
        final = folder / inputs.digest
        if not final.is_dir():
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(folder, 0o700)
            partial = folder / f"{inputs.digest}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            for name, content in inputs.files:
                path = partial / name
                if ".." in PurePosixPath(name).parts or PurePosixPath(name).is_absolute():
                    raise CarryError(f"a carried input has no place in a folder: {name!r}")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
            (partial / inputs.data).mkdir(exist_ok=True)
            os.rename(partial, final)
        _laid_out[(str(folder), inputs.digest)] = (final / inputs.config, final / inputs.data)
        return _laid_out[(str(folder), inputs.digest)]
