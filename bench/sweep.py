"""What removing a student's leftovers costs (user layer, root): a flood of files and a folder thousands deep
left in a world-writable folder by the student user, removed by the grader's sweep (grader/sandbox/cleanup.py).

Prints the time, the files per second and the grader's memory growth while sweeping, for each case.
Run as root from the repository: `PYTHONPATH=. python3 bench/sweep.py [--files 500000] [--depth 3000]`."""
from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from grader.sandbox import DEFAULT_USER, ensure_user
from grader.sandbox.cleanup import SWEEP_SECONDS, sweep


def as_user(uid: int, gid: int, work) -> None:
    """Run `work()` in a child process as uid/gid (what the student's code would do)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            work()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def flood(folder: Path, count: int) -> None:
    for i in range(count):
        os.close(os.open(folder / f"flood-{i}", os.O_CREAT | os.O_WRONLY, 0o600))


def deep(folder: Path, depth: int) -> None:
    """`depth` nested folders made relative to a folder descriptor, as an attacker would (no long path)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    for level in range(depth):
        name = "deep" if level == 0 else "d"
        os.mkdir(name, dir_fd=fd)
        inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = inner
    os.close(fd)


def measure(name: str, folder: Path, uid: int, gid: int, entries: int) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    swept = sweep([folder], uid, gid, time.monotonic() + SWEEP_SECONDS)
    seconds = time.monotonic() - started
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    left = len(os.listdir(folder))
    print(f"{name}: {swept.count} removed in {seconds:.1f} s ({entries / max(seconds, 1e-9):,.0f} entries/s), "
          f"complete {swept.complete}, {left} left, grader's peak memory grew {grown / 1024:.1f} MiB, "
          f"{len(swept.names)} named for staff")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=500_000, help="files in the flood (default 500000)")
    parser.add_argument("--depth", type=int, default=3000, help="levels of the deep folder (default 3000)")
    args = parser.parse_args()
    uid, gid = ensure_user(DEFAULT_USER)
    with tempfile.TemporaryDirectory(prefix="sweep-bench-", dir="/var/tmp") as tmp:
        folder = Path(tmp)
        os.chmod(folder, 0o1777)
        started = time.monotonic()
        as_user(uid, gid, lambda: flood(folder, args.files))
        print(f"made {args.files} files in {time.monotonic() - started:.1f} s")
        measure("flood", folder, uid, gid, args.files)
        as_user(uid, gid, lambda: deep(folder, args.depth))
        measure(f"{args.depth} levels deep", folder, uid, gid, args.depth)


if __name__ == "__main__":
    main()
