"""Closing what student code must never read (user layer), and proving it safe to reopen.

Guarantee: while student code may run in the user layer, the protected paths (reference data, config,
grader, checks), the .git of the work trees holding them and the reference data kept beside the grader are
unreadable to the student user. What lies in the grader's own folder (the checkout, or the image's
/autograder/source) is closed once, at install time (setup.sh, the Dockerfile, `make protect`): a grading
run never changes its modes, and refuses, changing nothing, when it finds it open. What a run is handed
from elsewhere (a data folder, Gradescope's metadata, a batch's export) it closes to everyone but its owner
for the run; those modes come back only once no process of any student user is left; otherwise they stay
closed and the reason is kept for staff. The namespace layer closes nothing: its mount namespace shows the
student none of these (namespaces.py). Relies on: root owning the paths (the student user is not their
owner) and on procfs.py to see every process of the student user.
"""
from __future__ import annotations

import os
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from grader.sandbox.errors import SandboxError
from grader.sandbox.procfs import describe, user_gone, user_processes


REPOSITORY = Path(__file__).resolve().parents[2]  # the checkout (or /autograder/source) holding grader/


def inaccessible_ancestor(path: Path) -> Path | None:
    """The first folder on the way to `path` that other users cannot enter, if any."""
    for folder in [*reversed(path.resolve().parents), path.resolve()]:
        if folder.is_dir() and not os.stat(folder).st_mode & stat.S_IXOTH:
            return folder
    return None


def open_to_others(path: Path) -> bool:
    """Whether users other than the owner may reach `path`: group or other bits on it, and every folder on
    the way open to others."""
    return inaccessible_ancestor(path.parent) is None and bool(stat.S_IMODE(path.lstat().st_mode) & 0o077)


def _git_dirs(paths: list[Path]) -> set[Path]:
    """The .git folder of every work tree holding one of `paths`: its objects hold copies of committed files."""
    found = set()
    for path in paths:
        for folder in [path, *path.parents]:
            if (folder / ".git").exists():
                found.add(folder / ".git")
                break
    return found


def closed_paths(protected: list[Path]) -> list[Path]:
    """What the user layer closes: the protected paths, the .git of their work trees, and the reference
    data kept beside the grader (a second copy of the labels when --data points elsewhere)."""
    extra = _git_dirs(protected) | {REPOSITORY / "reference_data"}
    return sorted({p for p in [*protected, *extra] if p.exists()})


@contextmanager
def closed_to_others(paths: list[Path], uids: list[int]) -> Iterator[list[str]]:
    """Close `paths` to everyone but their owner for the duration, and restore their modes afterwards, but
    only once no process of any of `uids` is left (else they stay closed). Yields a list that holds, at the
    end, what kept them closed; the caller may add its own reason before the end to keep them closed.
    Raises SandboxError, changing nothing, when a path open to others lies in the grader's own folder (closed
    at install time, never here) or cannot be closed (a read-only mount)."""
    installed = [p for p in paths if p.is_relative_to(REPOSITORY) and open_to_others(p)]
    if installed:
        listed = " ".join(str(p) for p in installed)
        raise SandboxError(f"{listed} {'is' if len(installed) == 1 else 'are'} open to other users, and student code "
                           f"runs as one of them. The grader's own folder ({REPOSITORY}) is closed once, at install "
                           f"time, never by a grading run: as root, run `chmod go-rwx {listed}` (`make protect` in a "
                           "checkout; setup.sh and the Dockerfile do it), or install bubblewrap for the namespace layer")
    saved: dict[Path, int] = {}
    kept: list[str] = []
    for path in paths:
        if path.is_relative_to(REPOSITORY):
            continue  # closed at install time (checked above): never changed here
        mode = stat.S_IMODE(path.lstat().st_mode)
        if not mode & 0o077:
            continue  # closed already (at install time, say): nothing to change, nothing to restore
        try:
            path.chmod(mode & 0o700)
        except OSError as exc:  # a read-only mount: grading would leave it readable, so it does not start
            for done, old in saved.items():
                done.chmod(old)
            raise SandboxError(f"{path} cannot be closed to the student user ({exc.strerror}): make it unreadable to "
                               "other users (chmod go-rwx) or put it on a writable file system") from None
        saved[path] = mode
    try:
        yield kept
    finally:
        alive = [] if kept else [pid for uid in uids if not user_gone(uid) for pid in user_processes(uid)]
        if alive:
            described = ", ".join(f"{pid} ({describe(pid)})" for pid in alive[:3])
            kept.append(f"a process of the student user was still running after grading: {described}")
        if not kept:
            for path, mode in saved.items():
                path.chmod(mode)
