"""Running the submissions of a batch: each in its own grader process and student user, on threads here or
as tasks on a Dask cluster, into OUT/<submission>/, with a key that lets a rerun reuse what is current."""
from __future__ import annotations

import argparse
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from grader import __version__, duplicates
from grader.batch.cluster import Status, WorkerRefused, announce, check_worker, code_digest, security, watch
from grader.batch.carry import Carried, CarryError, Inputs, inputs_on_disk, lay_out, pack_inputs, pack_submission
from grader.batch.submissions import BatchError, Entry, submission_digest, unpack
from grader.config import GraderConfig, load_config
from grader.report import fallback_results
from grader.sandbox import DEFAULT_USER, open_lock
from grader.text import printable
from grader.time_limit import WALL_GUARD

GRADER = Path(__file__).resolve().parents[1]  # the grader package, whose code is part of the key
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
        files += sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                        and not p.name.endswith(".lock"))
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

    def stored(self, entry: Entry) -> Outcome | None:
        folder = self.out / entry.name
        try:
            stamp = json.loads((folder / "grading.json").read_text())
        except (OSError, ValueError):
            return None
        report = read_report(folder / "results.json")
        if report is None or not isinstance(stamp, dict) or stamp.get("key") != self.settings.key:
            return None
        if stamp.get("submission") != submission_digest(entry.source):  # replaced since: regrade
            return None
        return Outcome(entry, report, float(stamp.get("seconds", 0)), reused=True, problem=stamp.get("problem", ""),
                       files=[tuple(f) for f in stamp.get("files", [])])

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
        digest = digest or submission_digest(entry.source)  # before: a file replaced meanwhile regrades
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
                files = duplicates.file_hashes(submission)
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


def on_worker(settings: Settings) -> Settings:
    """The settings as the Dask worker running this task sees them: on a remote cluster its machine runs as
    many tasks at once as the worker has threads, each capped at that share of the CPUs."""
    if settings.cpu_share is not None:
        return settings
    from distributed import get_worker

    return dataclasses.replace(settings, cpu_share=get_worker().state.nthreads)


def grade_remote(settings: Settings, carried: Carried, inputs: Inputs, version: str, code: str) -> dict[str, bytes]:
    """A Dask task: on a worker that runs the batch's grader (`version`, `code`: cluster.check_worker), with
    the batch's inputs laid out on its own disk once (their grading key checked against the batch's), grade
    one carried submission in a private temporary folder, and return the files the batch keeps for it."""
    from distributed import get_worker

    settings = on_worker(settings)
    user, lock = acquire_slot(settings.slots)
    try:
        check_worker(version, code, user, settings.cpu_share or 1)
        worker = get_worker()
        config, data = inputs_on_disk(inputs, Path(worker.local_directory) / "mp-grader-inputs")
        if (config, settings.key) not in _checked:
            if grading_key(load_config(config), data, list(settings.options)) != settings.key:
                raise WorkerRefused(f"worker {worker.address} finds another grading key for the batch's inputs "
                                    "(its grader or its copy of the config or data differs): install the batch's grader")
            _checked.add((config, settings.key))
        settings = dataclasses.replace(settings, config=config, data=data)
        announce(carried.name)
        with tempfile.TemporaryDirectory(prefix="mp-grader-batch-") as tmp:
            folder, own = Path(tmp) / carried.name, Path(tmp) / ".carried"
            own.mkdir(mode=0o700)
            source = lay_out(carried, own / carried.name)
            Batch(settings, Path(tmp)).grade(Entry(carried.name, source), user, digest=carried.digest)
            return {name: (folder / name).read_bytes() for name in OUTPUT_FILES if (folder / name).is_file()}
    finally:
        if lock is not None:
            os.close(lock)


_checked: set[tuple[Path, str]] = set()  # (inputs on this worker, key) found to give the batch's grading key


def on_threads(jobs: int, batch: Batch, todo: list[Entry], status: Status) -> Iterator[Outcome]:
    """Grade `todo` on `jobs` threads of this machine, each in its own grader process; outcomes as they end."""
    def run(entry: Entry) -> Outcome:
        status.set(entry.name, "running", worker="here")
        return grade_slotted(batch, entry)

    with ThreadPoolExecutor(jobs) as pool:
        for future in as_completed([pool.submit(run, e) for e in todo]):
            yield future.result()


def local_cluster(jobs: int, gpu: bool):
    """`--dask local`: `jobs` workers as threads of this process, talking over Dask's in-process transport.
    Nothing listens on a network port, so no other user of the machine can reach a scheduler that runs
    tasks as root (a TCP one on loopback would take anyone's). The grading itself happens in the grader
    processes each task starts, so threads lose nothing."""
    from distributed import LocalCluster

    return LocalCluster(n_workers=jobs, threads_per_worker=1, processes=False, dashboard_address=None,
                        resources={"GPU": 1} if gpu else None)


def keep_inputs(inputs: Inputs) -> Inputs:
    """A Dask task whose result is the batch's inputs: held by a worker, fetched from it once by each other
    worker whose tasks need them, and made again by the scheduler (which keeps the task) if all holders die."""
    return inputs


def on_dask(args: argparse.Namespace, settings: Settings, batch: Batch, todo: list[Entry], config: GraderConfig,
            status: Status) -> Iterator[Outcome]:
    """One task per submission on a Dask cluster (`--dask local`: one started here with --jobs workers), each
    outcome written here, once, as its task ends. Workers share no file system with the batch: each task
    carries its submission, and the inputs go to each worker once (grader/batch/carry.py). A task is handed
    over only when a worker thread is about to be free, so the batch holds few submissions in memory. A task
    whose workers kept dying is that submission's grader problem; a worker that must not grade stops the
    batch (grader/batch/cluster.py). On CUDA each task asks for one unit of the workers' GPU resource (start
    them with --resources GPU=1)."""
    import dask
    from distributed import Client, as_completed as dask_completed
    from distributed.scheduler import KilledWorker

    cluster = local_cluster(args.jobs, args.device == "cuda") if args.dask == "local" else None
    remote = security(args.dask_tls) if cluster is None else None
    stop, lock = threading.Event(), threading.Lock()
    waiting = list(reversed(todo))
    tracked: dict = {}  # submission -> its future, for the status watcher
    # A task carries a whole submission (up to the upload cap) on purpose: Dask's warning about large graphs
    # is about graphs that repeat data, which these do not.
    with dask.config.set({"distributed.admin.large-graph-warning-threshold": "64GiB"}), \
            Client(cluster if cluster is not None else args.dask, security=remote) as client:
        resources = {"GPU": 1} if args.device == "cuda" or (args.device == "auto" and config.device == "cuda") else None
        code, packed = code_digest(), pack_inputs(config, settings.data)
        inputs = client.submit(keep_inputs, packed, key=f"mp-grader-inputs-{packed.digest[:16]}", pure=False)
        del packed
        running = dask_completed()
        futures: dict = {}
        early: list[Outcome] = []

        def hand_over() -> None:
            """Submit tasks until every worker thread has one and one more waits."""
            threads = sum(w.get("nthreads", 1) for w in client.scheduler_info(n_workers=-1).get("workers", {}).values())
            while waiting and len(futures) < threads + 1:
                entry = waiting.pop()
                digest = submission_digest(entry.source)
                with batch.unpacked(entry) as (source, problem):
                    try:
                        carried = None if problem else pack_submission(entry.name, source, digest,
                                                                       batch.config.upload_limits)
                    except CarryError as exc:
                        problem = f"grader problem: {exc}"
                if carried is None:
                    early.append(batch.record(entry, problem, 0.0, digest))
                    continue
                future = client.submit(grade_remote, settings, carried, inputs, __version__, code, pure=False,
                                       resources=resources, key=f"grade-{entry.name}-{settings.key[:12]}")
                futures[future] = entry
                running.add(future)
                with lock:
                    tracked[entry.name] = future

        watcher = threading.Thread(target=watch, args=(client, tracked, lock, status, stop), daemon=True)
        watcher.start()
        try:
            hand_over()
            while futures or early or waiting:
                yield from early
                early.clear()
                if not futures:
                    hand_over()
                    continue
                future = next(running)
                entry = futures.pop(future)
                yield outcome_of(batch, entry, future, KilledWorker)
                hand_over()
        finally:
            stop.set()
            watcher.join()
    if cluster is not None:
        cluster.close()


def outcome_of(batch: Batch, entry: Entry, future, killed: type) -> Outcome:
    """Write down what `entry`'s finished task gave, once: its files, or the grader problem that stopped it.
    A worker that must not grade stops the batch (BatchError)."""
    try:
        files = future.result()
    except WorkerRefused as exc:
        raise BatchError(f"{exc}; the submissions graded so far are kept, and a rerun goes on from them") from None
    except killed as exc:
        return batch.record(entry, f"grader problem: the workers that ran it died ({exc.allowed_failures + 1} "
                                   "of them, Dask's allowed-failures); it was not graded", 0.0,
                            submission_digest(entry.source))
    except Exception as exc:  # the task itself failed on its worker: the cluster's problem, not the student's
        return batch.record(entry, f"grader problem: its task failed on the cluster ({type(exc).__name__}: "
                                   f"{printable(str(exc))})", 0.0, submission_digest(entry.source))
    folder = batch.out / entry.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name, content in files.items():
        if name in OUTPUT_FILES:
            (folder / name).write_bytes(content)
    outcome = batch.stored(entry)
    if outcome is None:
        outcome = batch.record(entry, "the worker returned no usable result", 0.0, submission_digest(entry.source))
    outcome.reused = False
    return outcome
