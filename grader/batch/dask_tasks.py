"""The batch's submissions as tasks on a Dask cluster (#29): handed over as workers free up, each graded on
its worker from what it carries (grader/batch/carry.py) by the same Batch as on threads here, its files
written here once, when its task ends. Who may join and what a worker must be: grader/batch/cluster.py."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

from grader import __version__
from grader.batch.carry import Carried, CarryError, Inputs, inputs_on_disk, lay_out, pack_inputs, pack_submission
from grader.batch.cluster import (POLL_SECONDS, Status, WorkerRefused, announce, check_worker, code_digest,
                                  security, watch)
from grader.batch.runs import OUTPUT_FILES, Batch, Outcome, Settings, acquire_slot, grading_key
from grader.batch.submissions import BatchError, Entry
from grader.config import GraderConfig, load_config
from grader.text import printable


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


def local_cluster(jobs: int, gpu: bool):
    """`--dask local`: `jobs` workers as threads of this process, talking over Dask's in-process transport.
    Nothing listens on a network port, so no other user of the machine can reach a scheduler that runs
    tasks as root (a TCP one on loopback would take anyone's). The grading itself happens in the grader
    processes each task starts, so threads lose nothing."""
    from distributed import LocalCluster

    return LocalCluster(n_workers=jobs, threads_per_worker=1, processes=False, dashboard_address=None,
                        resources={"GPU": 1} if gpu else None)


def keep_inputs(inputs: Inputs) -> Inputs:
    """A Dask task whose result is the batch's inputs: copied to each worker once, and made again by the
    scheduler (which keeps the task) if every worker holding them dies."""
    return inputs


def capacity(workers: dict, resources: dict | None) -> int:
    """Tasks the cluster's workers (scheduler_info's) can run at once: their threads, or on CUDA their GPUs."""
    if resources is None:
        return sum(int(w.get("nthreads", 1)) for w in workers.values())
    return sum(min(int(w.get("nthreads", 1)), int(w.get("resources", {}).get("GPU", 0))) for w in workers.values())


def on_dask(args: argparse.Namespace, settings: Settings, batch: Batch, todo: list[Entry], config: GraderConfig,
            status: Status) -> Iterator[Outcome]:
    """One task per submission on a Dask cluster (`--dask local`: one started here with --jobs workers), each
    outcome written here, once, as its task ends. Workers share no file system with the batch: each task
    carries its submission, and the inputs go to each worker once (grader/batch/carry.py). A task is handed
    over only when a worker is about to be free, so the batch holds few submissions in memory. A task whose
    workers kept dying is that submission's grader problem; a worker that must not grade stops the batch
    (grader/batch/cluster.py), as does a cluster with no worker that can take the tasks for --dask-wait
    seconds. On CUDA each task asks for one unit of the workers' GPU resource (start them with
    --resources GPU=1)."""
    if not todo:  # all graded before: the cluster is not needed, nor even reached
        return
    import dask
    from distributed import Client, wait

    cluster = local_cluster(args.jobs, args.device == "cuda") if args.dask == "local" else None
    remote = security(args.dask_tls) if cluster is None else None
    stop, lock = threading.Event(), threading.Lock()
    waiting = list(reversed(todo))
    tracked: dict = {}  # submission -> its future, for the status watcher
    # A task carries a whole submission (up to the upload cap) on purpose: Dask's warning about large graphs
    # is about graphs that repeat data, which these do not. The local cluster goes with the batch, however
    # it ends.
    with contextlib.closing(cluster) if cluster is not None else contextlib.nullcontext(), \
            dask.config.set({"distributed.admin.large-graph-warning-threshold": "64GiB"}), \
            Client(cluster if cluster is not None else args.dask, security=remote) as client:
        resources = {"GPU": 1} if args.device == "cuda" or (args.device == "auto" and config.device == "cuda") else None
        code, packed = code_digest(), pack_inputs(config, settings.data)
        inputs = client.submit(keep_inputs, packed, key=f"mp-grader-inputs-{packed.digest[:16]}", pure=False)
        del packed
        # On every worker there is now, before any task: else Dask places the tasks where the inputs lie, and
        # the other workers wait. A worker that joins later fetches them with its first task.
        client.replicate([inputs])
        futures: dict = {}  # future -> (its submission, that submission's digest as it was handed over)
        early: list[Outcome] = []
        able_since = time.monotonic()  # when a worker that can take the tasks was last seen

        def hand_over() -> None:
            """Submit tasks until every worker that can take one has one, and one more waits; or stop when none
            could for --dask-wait seconds."""
            nonlocal able_since
            can = capacity(client.scheduler_info(n_workers=-1).get("workers", {}), resources)
            if can:
                able_since = time.monotonic()
            elif time.monotonic() - able_since > args.dask_wait:
                raise BatchError(f"no worker of the cluster could take a task for {args.dask_wait:g} s ("
                                 + ("none offers a GPU: start GPU workers with --resources GPU=1" if resources
                                    else "none is connected") + "); the submissions graded so far are kept, and "
                                 "a rerun goes on from them")
            while waiting and len(futures) < can + 1:
                entry = waiting.pop()
                digest = batch.digest(entry)
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
                futures[future] = (entry, digest)
                with lock:
                    tracked[entry.name] = future

        watcher = threading.Thread(target=watch, args=(client, tracked, lock, status, stop), daemon=True)
        watcher.start()
        try:
            while futures or early or waiting:
                hand_over()
                yield from early
                early.clear()
                try:
                    done = wait(list(futures), timeout=POLL_SECONDS, return_when="FIRST_COMPLETED").done
                except (TimeoutError, asyncio.TimeoutError):  # none ended within the poll: look at the cluster again
                    done = set()
                for future in done:
                    entry, digest = futures.pop(future)
                    yield outcome_of(batch, entry, digest, future)
        finally:
            stop.set()
            watcher.join()


def outcome_of(batch: Batch, entry: Entry, digest: str, future) -> Outcome:
    """Write down what `entry`'s finished task gave, once: its files, or the grader problem that stopped it,
    under `digest`, the submission's as its task was handed over (as a threaded grade takes it before it
    grades: a submission replaced meanwhile is regraded by the next run). A worker that must not grade stops
    the batch (BatchError)."""
    from distributed.scheduler import KilledWorker

    try:
        files = future.result()
    except WorkerRefused as exc:
        raise BatchError(f"{exc}; the submissions graded so far are kept, and a rerun goes on from them") from None
    except KilledWorker as exc:
        return batch.record(entry, f"grader problem: the workers that ran it died ({exc.allowed_failures + 1} "
                                   "of them, Dask's allowed-failures); it was not graded", 0.0, digest)
    except Exception as exc:  # the task itself failed on its worker: the cluster's problem, not the student's
        return batch.record(entry, f"grader problem: its task failed on the cluster ({type(exc).__name__}: "
                                   f"{printable(str(exc))})", 0.0, digest)
    folder = batch.out / entry.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name, content in files.items():
        if name in OUTPUT_FILES:
            (folder / name).write_bytes(content)
    outcome = batch.stored(entry, digest)
    if outcome is None:
        outcome = batch.record(entry, "the worker returned no usable result", 0.0, digest)
    outcome.reused = False
    return outcome
