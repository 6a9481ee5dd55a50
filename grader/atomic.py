"""Files written into place whole, by one rename: a reader sees the old file or the new one, never half of
one, and a link planted at the destination is replaced, never followed.

Used by every writer whose output someone else reads: results.json (report.ResultsFile, which also reserves
its disk space first), the predictions a batch keeps, and the two zips of package.py.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator


class PendingFile:
    """A new file beside `path`, made private to the grader (mode 0600), until commit() renames it over
    `path`. Its descriptor stays open, so the name can be checked to still be this file at commit."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix)
        self.fd: int | None = fd
        self.tmp = Path(name)

    def commit(self, mode: int = 0o644) -> None:
        """Give the file `mode` and rename it over `path`. Refuses (OSError) when its name no longer names this
        file (swapped by someone who may write to the folder)."""
        fd = self.fd
        assert fd is not None, "already committed or discarded"
        os.fchmod(fd, mode)
        os.fsync(fd)
        st, named = os.fstat(fd), os.lstat(self.tmp)
        if (st.st_dev, st.st_ino) != (named.st_dev, named.st_ino):
            raise OSError(f"{self.tmp} was replaced while it was being written")
        os.replace(self.tmp, self.path)
        os.close(fd)
        self.fd = None

    def discard(self) -> None:
        """Remove the file unless it was committed."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            try:
                os.unlink(self.tmp)
            except FileNotFoundError:
                pass


@contextmanager
def written_atomically(path: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """A binary file to write `path`'s new content into; renamed over `path` when the block ends without an
    error, removed when it raises."""
    pending = PendingFile(path)
    assert pending.fd is not None
    try:
        with os.fdopen(os.dup(pending.fd), "wb") as f:
            yield f
        pending.commit(mode)
    finally:
        pending.discard()
