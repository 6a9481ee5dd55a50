"""A question's scratch folder on a file system of its own size, where root may mount one.

Guarantee: where it can be mounted, the scratch folder (the child script, the images, the student's copy
of its submission and its home) is a tmpfs sized to what the grader puts there plus the memory limit, so
whatever the student writes there is bounded, and counted as memory (the cgroup charges it to the writer;
without one the jail counts its growth). In the namespace layer it is, with the private /tmp and
/dev/shm, everywhere the student can write: the disk other runs share is out of reach. Relies on: root
with the right to mount (a plain machine or VM; default Docker and Gradescope have none, and say so).
"""
from __future__ import annotations

import ctypes
import os
import re
import tempfile
from pathlib import Path

MS_NOSUID, MS_NODEV = 2, 4
MNT_DETACH = 2
SLACK = 16 * 2**20  # the child script and the file system's own blocks, beyond what the grader sizes


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def mount_tmpfs(folder: Path, size: int) -> None:
    """Mount a tmpfs of `size` bytes (mode 0755, no set-uid, no devices) on `folder`. Raises OSError."""
    options = f"size={size},mode=0755".encode()
    if _libc().mount(b"tmpfs", str(folder).encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"cannot mount a tmpfs on {folder}: {os.strerror(errno)}")


def unmount(folder: Path) -> bool:
    """Detach the file system mounted on `folder` (at once, even if something still holds it open)."""
    return _libc().umount2(str(folder).encode(), MNT_DETACH) == 0


def lay_out(scratch: Path, uid: int | None, gid: int | None) -> list[Path]:
    """The scratch folder as a question's child sees it, the same for the jail and the probe: open to read,
    with its copy of the submission and its home, the student user's (when there is one); returns those two."""
    os.chmod(scratch, 0o755)
    writable = [scratch / "submission", scratch / "home"]
    for folder in writable:
        folder.mkdir(mode=0o700)
        if uid is not None and gid is not None:
            os.chown(folder, uid, gid)
    return writable


def unmount_stale(uid: int) -> list[str]:
    """Unmount and remove the scratch folders an earlier run of the student user `uid` left mounted (a grader
    killed mid-question cannot unmount its own): those whose copy of the submission `uid` owns. Only one run
    at a time holds a student user (users.take_lock), so none of them is in use."""
    prefix = os.path.join(tempfile.gettempdir(), "grader-")
    removed = []
    with open("/proc/self/mountinfo", "rb") as f:
        mounts = [line.split()[4] for line in f if b" - tmpfs " in line]
    for raw in mounts:  # mountinfo writes a space, a tab, a newline and a backslash as octal escapes (\\040)
        point = os.fsdecode(re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), raw))
        if not point.startswith(prefix):
            continue
        try:
            owner = os.lstat(os.path.join(point, "submission")).st_uid
        except OSError:
            continue
        if owner == uid and unmount(Path(point)):
            try:
                os.rmdir(point)
            except OSError:
                pass
            removed.append(point)
    return removed


def mount_refused() -> str | None:
    """Why no tmpfs can be mounted here, or None (tried on a throwaway folder)."""
    if os.geteuid() != 0:
        return "mounting needs root"
    folder = Path(tempfile.mkdtemp(prefix="grader-mount-probe-"))
    try:
        mount_tmpfs(folder, 2**20)
    except OSError as exc:
        return exc.strerror or str(exc)
    else:
        unmount(folder)
    finally:
        folder.rmdir()
    return None
