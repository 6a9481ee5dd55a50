"""Finding the submissions of a batch (Gradescope's export, or a folder of folders and zips) and unpacking
a zipped one as Gradescope would, refusing links, paths outside it and anything over the upload caps."""
from __future__ import annotations

import hashlib
import os
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from grader.text import printable
from grader.upload import UploadLimits, open_regular, walk

METADATA = "submission_metadata.yml"
MAX_DIGEST_ENTRIES = 1_000_000  # entries of a submission folder its digest reads at most


class BatchError(Exception):
    """The batch cannot start; the message says why."""


@dataclass
class Entry:
    """One submission to grade."""

    name: str  # its folder's (or zip's) name: the key of the export and of OUT/<name>/
    source: Path  # a folder, or a .zip
    submitters: list[str] = field(default_factory=list)  # "Name <email>"
    created_at: str = ""


def _submitter(person: object) -> str:
    if not isinstance(person, dict):
        return printable(str(person))
    name, email = person.get(":name") or person.get("name") or "", person.get(":email") or person.get("email") or ""
    return printable(f"{name} <{email}>" if email else str(name))


def discover(root: Path) -> list[Entry]:
    """The submissions under `root`: those named in Gradescope's metadata, else every folder and zip."""
    if not root.is_dir():
        raise BatchError(f"{root} is not a folder")
    metadata = root / METADATA
    if metadata.is_file():
        import yaml

        try:
            listing = yaml.safe_load(metadata.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise BatchError(f"{metadata}: not readable as YAML ({exc})") from None
        if not isinstance(listing, dict):
            raise BatchError(f"{metadata}: expected a mapping of submission folders, got {type(listing).__name__}")
        entries = []
        for name, info in sorted(listing.items(), key=lambda kv: str(kv[0])):
            info = info if isinstance(info, dict) else {}
            people = info.get(":submitters") or info.get("submitters") or []
            entries.append(Entry(str(name), root / str(name), [_submitter(p) for p in people],
                                 str(info.get(":created_at") or info.get("created_at") or "")))
        return entries
    return [Entry(p.stem if p.suffix == ".zip" else p.name, p) for p in sorted(root.iterdir())
            if not p.name.startswith(".") and (p.is_dir() or p.suffix == ".zip")]


def unpack(archive: Path, destination: Path, limits: UploadLimits) -> None:
    """Extract a submission zip into a new root-only folder, refusing (ValueError) what Gradescope's own
    unpacking would not give the grader: links, paths outside the folder, more than the upload caps. The
    sizes are the zip's declared ones, and zipfile never writes more than a member declares."""
    with zipfile.ZipFile(archive) as z:
        members = z.infolist()
        if len(members) > limits.max_files:
            raise ValueError(f"more than {limits.max_files} files and folders")
        if sum(m.file_size for m in members) > limits.max_bytes:
            raise ValueError(f"more than {UploadLimits.mib(limits.max_bytes)} unpacked")
        destination.mkdir(mode=0o700)
        for m in members:
            parts = Path(m.filename).parts
            if m.filename.startswith("/") or ".." in parts or stat.S_ISLNK(m.external_attr >> 16):
                raise ValueError(f"{printable(m.filename, name=True)}: a link or a path outside the submission")
            if len(parts) > limits.max_depth:
                raise ValueError(f"{printable(m.filename, name=True)}: folders nested deeper than {limits.max_depth}")
            z.extract(m, destination)


def submission_digest(source: Path, limits: UploadLimits) -> str:
    """sha256 of a submission as it would be graded: a zip's bytes, or every entry of a folder (its relative
    path, its kind, its size, and a regular file's bytes while they are within the upload caps: past them the
    grader refuses it whatever the bytes, and a sparse file of terabytes must not be read). Only regular files
    are opened: a device node's open can act on the device, and a FIFO's would block. Part of a stored
    result's key: a replaced submission is regraded."""
    digest = hashlib.sha256()
    budget = limits.max_bytes

    def add(path: Path, relative: str) -> None:
        nonlocal budget
        try:
            st = path.lstat()
        except OSError:
            digest.update(f"missing\0{relative}\0".encode("utf-8", "surrogateescape"))
            return
        digest.update(f"{stat.S_IFMT(st.st_mode)}\0{relative}\0{st.st_size}\0".encode("utf-8", "surrogateescape"))
        if not limits.within(st.st_size, budget):
            return
        budget -= st.st_size
        try:
            opened = open_regular(path)
        except OSError:
            return
        if opened is not None:
            with os.fdopen(opened[0], "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)

    add(source, ".")
    if source.is_dir() and not source.is_symlink():
        seen = 0
        for top, dirs, files in walk(source):
            for name in [*dirs, *files]:
                seen += 1
                if seen > MAX_DIGEST_ENTRIES:  # past any upload cap: graded, it is refused
                    digest.update(b"truncated\0")
                    return digest.hexdigest()
                add(top / name, os.path.relpath(top / name, source))
    return digest.hexdigest()
