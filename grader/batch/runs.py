"""Running the submissions of a batch: each in its own grader process and student user, on threads here (or
as tasks on a Dask cluster: grader/batch/dask_tasks.py), into OUT/<submission>/, with a key that lets a
rerun reuse what is current."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from grader import __version__, duplicates
from grader.batch.carry import input_files
from grader.batch.cluster import GRADER, Status
from grader.batch.submissions import Entry, submission_digest, unpack
from grader.config import GraderConfig, load_config
from grader.report import fallback_results
from grader.sandbox import DEFAULT_USER, open_lock
from grader.text import printable
from grader.time_limit import WALL_GUARD

MAX_JOBS = 99  # student users grader-student, grader-student-2, ... grader-student-99


@dataclass
class Outcome:
    """What grading one submission gave: its report and how it went."""

    entry: Entry
    report: dict  # its results.json
    seconds: float
    reused: bool = False
    problem: str = ""  # what went wrong outside the grader's own report (unpacking, a killed grader)
    files: list = field(default_factory=list)  # (sha256, size, path) of its larger files, for the duplicate check


def grading_key(config: GraderConfig, data: Path, options: list[str]) -> str:
    """What a result depends on besides the submission: the grader's code, the config (and its checks), the
    reference data's bytes and the options. A stored result with another key is regraded."""
    digest = hashlib.sha256(f"{__version__}\0{json.dumps(options)}\0".encode())
    files = [config.source]
    for folder in (GRADER, data, *([config.checks] if config.checks else [])):
        files += input_files(folder)
    for path in files:
        digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def student_users(jobs: int) -> list[str]:
    return [DEFAULT_USER] + [f"{DEFAULT_USER}-{i}" for i in range(2, jobs + 1)]


def read_report(path: Path) -> dict | None:
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) and isinstance(report.get("tests"), list) else None


@dataclass(frozen=True)
class Settings:
    """What grading one submission needs, wherever it runs (picklable, for Dask workers): absolute paths,
    which a worker must see as the batch's machine does."""

    config: Path
    data: Path
    options: tuple[str, ...]  # the grader's flags that affect a result
    key: str  # grading_key() of the above
    timeout: float  # seconds a grader process gets before it is killed
    slots: int  # student users a machine may use at once
    cpu_share: int | None = None  # runs a machine has at once, each capped at its share of the CPUs (--cpu-share)


class Batch:
    """The grading of one submission in its own grader process, into OUT/<submission>/."""

    def __init__(self, settings: Settings, out: Path):
        self.settings, self.out = settings, out
        self.config = load_config(settings.config)

    def stored(self, entry: Entry, digest: str | None = None) -> Outcome | None:
        """`entry`'s result in OUT when it is current; `digest`: its submission_digest when taken already."""
        folder = self.out / entry.name
        try:
            stamp = json.loads((folder / "grading.json").read_text())
        except (OSError, ValueError):
            return None
        report = read_report(folder / "results.json")
        if report is None or not isinstance(stamp, dict) or stamp.get("key") != self.settings.key:
            return None
        if stamp.get("submission") != (digest or self.digest(entry)):  # replaced since: regrade
            return None
        return Outcome(entry, report, float(stamp.get("seconds", 0)), reused=True, problem=stamp.get("problem", ""),
                       files=[tuple(f) for f in stamp.get("files", [])])

    def digest(self, entry: Entry) -> str:
        """`entry`'s submission_digest, the key of its stored result."""
        return submission_digest(entry.source, self.config.upload_limits)

    @contextmanager
    def unpacked(self, entry: Entry) -> Iterator[tuple[Path, str]]:
        """The folder to grade for `entry` (a zip unpacked as Gradescope would, removed after), and what kept it
        from being one ("" when nothing did)."""
        if entry.source.suffix != ".zip" or not entry.source.is_file():
            yield entry.source, ""
            return
        unpacked = self.out / ".unpacked" / entry.name
        shutil.rmtree(unpacked, ignore_errors=True)
        unpacked.parent.mkdir(mode=0o700, exist_ok=True)
        try:
            try:
                unpack(entry.source, unpacked, self.config.upload_limits)
            except (ValueError, OSError, zipfile.BadZipFile) as exc:
                yield unpacked, f"the zip could not be unpacked: {printable(str(exc))}"
                return
            yield unpacked, ""
        finally:
            shutil.rmtree(unpacked, ignore_errors=True)

    def grade(self, entry: Entry, user: str, digest: str | None = None) -> Outcome:
        """Grade `entry` as `user`; `digest`: its submission_digest when taken elsewhere (a carried copy)."""
        folder = self.out / entry.name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        results, started = folder / "results.json", time.monotonic()
        digest = digest or self.digest(entry)  # before: a file replaced meanwhile regrades
        files: list = []
        with self.unpacked(entry) as (submission, problem):
            if not problem:
                argv = [sys.executable, "-m", "grader", "--submission", str(submission), "--data",
                        str(self.settings.data), "--results", str(results), "--config", str(self.settings.config),
                        f"--student-user={user}", "--predictions", str(folder / "predictions.npz"), *self.settings.options,
                        *([f"--cpu-share={self.settings.cpu_share}"] if self.settings.cpu_share else [])]
                # Beside other runs a question may take its wall-clock guard: the grader gets as much more.
                timeout = self.settings.timeout * (WALL_GUARD if self.settings.cpu_share else 1)
                with open(folder / "grader.log", "wb") as log:
                    try:
                        subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       timeout=timeout, check=False)
                    except subprocess.TimeoutExpired:
                        problem = f"the grader did not finish within {timeout:g} s and was killed"
                files = duplicates.file_hashes(submission, self.config.upload_limits)
        return self.record(entry, problem, time.monotonic() - started, digest, user, files)

    def record(self, entry: Entry, problem: str, seconds: float, digest: str, user: str = "",
               files: list | None = None) -> Outcome:
        """Write down how grading `entry` (whose files had `digest`) went: its results.json, or one saying what
        stopped it; and return it."""
        folder = self.out / entry.name
        folder.mkdir(parents=True, exist_ok=True)
        report = read_report(folder / "results.json")
        if report is None or problem:
            problem = problem or "the grader wrote no valid results.json (see grader.log)"
            report = fallback_results(f"Not graded: {problem}", self.config)
            (folder / "results.json").write_text(json.dumps(report, indent=2))
        (folder / "grading.json").write_text(json.dumps({"key": self.settings.key, "submission": digest,
                                                         "seconds": seconds, "problem": problem, "user": user,
                                                         "files": files or []}, indent=2))
        return Outcome(entry, report, seconds, problem=problem, files=files or [])


def acquire_slot(slots: int) -> tuple[str, int | None]:
    """A student user no other batch task on this machine holds, and the lock that holds it (released by
    closing it, or by the kernel when this process dies). Waits while all `slots` are taken. Not root: no
    user of its own is needed (each run's namespaces keep it apart) and none is locked."""
    users = student_users(slots)
    if os.geteuid() != 0:
        return users[0], None
    while True:
        for user in users:
            fd = open_lock(f"slot-{user}")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return user, fd
            except BlockingIOError:
                os.close(fd)
        time.sleep(0.1)


def grade_slotted(batch: Batch, entry: Entry) -> Outcome:
    user, lock = acquire_slot(batch.settings.slots)
    try:
        return batch.grade(entry, user)
    finally:
        if lock is not None:
            os.close(lock)


OUTPUT_FILES = ("results.json", "grading.json", "grader.log", "predictions.npz")


def on_threads(jobs: int, batch: Batch, todo: list[Entry], status: Status) -> Iterator[Outcome]:
    """Grade `todo` on `jobs` threads of this machine, each in its own grader process; outcomes as they end."""
    def run(entry: Entry) -> Outcome:
        status.set(entry.name, "running", worker="here")
        return grade_slotted(batch, entry)

    with ThreadPoolExecutor(jobs) as pool:
        for future in as_completed([pool.submit(run, e) for e in todo]):
            yield future.result()
