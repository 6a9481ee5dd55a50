"""Parent side of the isolation boundary: run a submission's predict() in a child process.

The grader never imports student code. It writes the images (never the labels) to a scratch folder,
starts grader/child.py there, and reads back a stream of raw score arrays from a private pipe, checking
every header, shape and dtype itself (no pickle). The child's printed output is kept, trimmed to its
start and end. A time limit covers the whole question (the copy of the upload under its wall-clock time:
the copy runs outside the question's cgroups, and so outside its CPU count); past it, or when
grading ends in any way, every process of the run is killed, the grader checks that none is left, and the
scratch folder is removed (grader/sandbox/jail.py says how).
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generator

import numpy as np

from grader.protocol import POLL_SECONDS, Pipe, read_messages
from grader.sandbox import ContainmentError, Jail, Sandbox, SandboxError, enclosing_cpus
from grader.threads import thread_settings, usable_cores
from grader.time_limit import cpu_allowance, wall_guard
from grader.text import printable
from grader.upload import UploadError, copy_upload, tree_bytes

CHILD = Path(__file__).with_name("child.py")
QUEUE_SIZE = 4  # batches in flight between the reading thread and the metrics
FILE_SIZE_LIMIT = 2**30  # largest file the child may write
CHILD_ERROR_KINDS = ("import", "missing", "cuda_oom", "exit", "exception")  # what child.py reports
ENV_PASSTHROUGH = ("PATH", "LANG", "LC_ALL", "LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
                   "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")  # and the thread counts (grader/threads.py)


class GraderError(Exception):
    """The grader's own environment failed (not the student's fault): staff must look."""


class StudentError(Exception):
    """The submission's fault: a clear message for the student (and the output it printed)."""

    def __init__(self, kind: str, message: str, details: str = "", from_student: bool = False):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.details = details
        self.from_student = from_student  # the message is the child's (student code could write it): output


class OutputTrim:
    """Keeps the first and last `limit // 2` characters of a byte stream (UTF-8, bad bytes escaped) and
    counts the bytes left out between them. Up to 4 bytes a character are buffered at each end."""

    def __init__(self, limit: int):
        self.half = limit // 2
        self.cap = 4 * self.half
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.cap - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail = (self.tail + chunk)[-self.cap :] if self.cap else bytearray()

    def text(self) -> str:
        def chars(data: bytes) -> str:
            return data.decode("utf-8", "surrogateescape")  # a bad byte becomes one character, escaped later

        if self.total == len(self.head) + len(self.tail):  # nothing fell between the two buffers
            whole = chars(bytes(self.head + self.tail))
            if len(whole) <= 2 * self.half:
                return printable(whole)
            head, tail = whole[: self.half], whole[len(whole) - self.half :]
        else:
            head, tail = chars(bytes(self.head))[: self.half], chars(bytes(self.tail))[-self.half :] if self.half else ""
        kept = len(head.encode("utf-8", "surrogateescape")) + len(tail.encode("utf-8", "surrogateescape"))
        dropped = self.total - kept
        middle = f"\n[... {dropped} bytes of output left out ...]\n" if dropped > 0 else ""
        return printable(head) + middle + printable(tail)


@dataclass(frozen=True)
class Limits:
    batch_size: int
    time_limit: float  # seconds, loading included
    memory_bytes: int  # anonymous + shared memory of all the child's processes together


@dataclass
class ChildRun:
    """What the grader learns about a run besides the scores."""

    device: str = ""
    confinement: str = ""  # why the child's seccomp filter could not be installed, if it could not
    output: OutputTrim = field(default_factory=lambda: OutputTrim(4000))
    seconds: float = 0.0
    cpu_seconds: float | None = None  # the question's CPU time, where the time limit was judged on it
    leftovers: int = 0  # processes still running when the question ended, killed
    leftover_files: list[str] = field(default_factory=list)  # files and IPC objects left behind, removed: the first
    leftover_count: int = 0  # how many in all
    cleanup_note: str = ""  # for staff: a limit the cleanup met


def _drain(stream: Pipe, output: OutputTrim) -> None:
    try:
        for chunk in stream.chunks():
            output.feed(chunk)
    except (EOFError, OSError):  # grading stopped while a stray process still held the pipe
        pass


def _text(value: object, limit: int) -> str:
    """A string from the child, made safe to print and to store: bounded, control characters escaped."""
    return printable(str(value)[:limit])


def _describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "its exit status is unknown"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (a crash, e.g. a segmentation fault)" if name in ("SIGSEGV", "SIGBUS", "SIGABRT", "SIGILL") else ""
        return f"the process was killed by {name}{hint}"
    return f"the process exited with status {returncode}"


def _killed_at_memory_limit(function: str, limits: Limits) -> StudentError:
    return StudentError("memory", f"Memory limit exceeded: {function}'s processes went past the limit of "
                        f"{limits.memory_bytes / 2**20:.0f} MiB and the kernel stopped them")


def _start_child(question: str, submission: Path, images: np.ndarray, batch_size: int, device: str,
                 sandbox: Sandbox, jail: Jail, deadline: float) -> tuple[subprocess.Popen, int]:
    """Lay out the scratch folder (child script and images, root's; a copy of the submission made by the
    student user) and start the child in the jail."""
    shutil.copy(CHILD, jail.scratch / "child.py")
    np.save(jail.scratch / "images.npy", images)
    for name in ("child.py", "images.npy"):
        os.chmod(jail.scratch / name, 0o644)
    copy_upload(submission, jail.submission, jail.run_as_student, max(deadline - time.monotonic(), 0.1))
    read_fd, write_fd = os.pipe()
    env = {k: os.environ[k] for k in ENV_PASSTHROUGH if k in os.environ}
    caps = [c for c in (enclosing_cpus(), sandbox.cpus) if c is not None]  # the container's, the batch's
    threads, thread_env = thread_settings(os.environ, min(caps, default=None), usable_cores())
    env.update(thread_env)
    env.update(jail.env())
    options = {"question": question, "images": str(jail.scratch / "images.npy"), "batch_size": batch_size,
               "device": device, "fd": write_fd, "file_size_limit": FILE_SIZE_LIMIT,
               "max_processes": sandbox.process_cap(),
               "grader_pid": None if sandbox.bwrap else os.getpid(), "unix_sockets": bool(sandbox.bwrap),
               "threads": threads}
    try:
        # -I ignores PYTHON* variables, so -u (unbuffered output) goes on the command line.
        proc = jail.start([sys.executable, "-I", "-u", str(jail.scratch / "child.py"), json.dumps(options)], env,
                          (write_fd,))
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    return proc, read_fd


def run_predictions(
    question: str,
    submission: Path,
    images: np.ndarray,
    tail_shape: tuple[int, ...],
    limits: Limits,
    device: str,
    sandbox: Sandbox,
    run: ChildRun,
) -> Generator[tuple[int, np.ndarray], None, None]:
    """Yield (start index, float32 scores of shape (count, *tail_shape)) for consecutive batches.

    Raises StudentError for everything the submission did wrong and GraderError when the child could not
    even start; whatever happens, every process of the run is killed and the scratch folder removed. If a
    process survives, ContainmentError (a GraderError) ends the question and the run.
    """
    started = time.monotonic()
    cpus = sandbox.cpus if sandbox.cpu_time else None  # judged on CPU time: capped beside others, and counted
    deadline = started + wall_guard(limits.time_limit, cpus)
    stop = threading.Event()
    proc, channel, threads = None, None, []
    try:
        jail = sandbox.jail(question, limits.memory_bytes, images.nbytes + tree_bytes(submission))
    except (SandboxError, ContainmentError) as exc:
        raise GraderError(str(exc)) from None
    try:
        try:
            proc, read_fd = _start_child(question, submission, images, limits.batch_size, device, sandbox, jail,
                                         deadline)
            assert proc.stdout is not None
        except UploadError as exc:
            raise StudentError("upload", f"Your submission could not be copied for grading: {exc}") from None
        except SandboxError as exc:
            raise GraderError(str(exc)) from None
        channel = Pipe(read_fd, stop)
        messages: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        threads = [threading.Thread(target=read_messages, args=(channel, messages, tail_shape, limits.batch_size), daemon=True),
                   threading.Thread(target=_drain, args=(Pipe(proc.stdout.fileno(), stop), run.output), daemon=True)]
        for t in threads:
            t.start()
        cpu_limit = None if cpus is None else cpu_allowance(limits.time_limit, cpus)
        yield from _receive(_Question(f"predict_{question}", len(images), tail_shape, limits, deadline, cpu_limit),
                            proc, jail, messages, run)
    finally:
        run.seconds = time.monotonic() - started
        if cpus is not None:
            run.cpu_seconds = jail.cpu_seconds()
        _close(jail, stop, threads, channel, proc, run)


@dataclass(frozen=True)
class _Question:
    function: str  # predict_q1 or predict_q2, for messages
    images: int
    tail_shape: tuple[int, ...]
    limits: Limits
    deadline: float  # time.monotonic() at which the question's time is up (its wall-clock guard, when judged on CPU time)
    cpu_limit: float | None  # CPU seconds it may use, when judged on CPU time


def _receive(q: _Question, proc: subprocess.Popen, jail: Jail, messages: queue.Queue,
             run: ChildRun) -> Generator[tuple[int, np.ndarray], None, None]:
    """The message loop: check every message from the child, and the time and memory on a timer, until
    the child reports done (return) or anything goes wrong (raise)."""
    expected, ready, next_check = 0, False, 0.0
    while True:
        now = time.monotonic()
        if now >= q.deadline:
            raise _out_of_time(q, jail, expected)
        if now >= next_check:  # on a timer, however busy the channel is
            next_check = now + POLL_SECONDS
            _check_memory(q, jail)
            _check_cpu_time(q, jail, expected)
        try:
            message = messages.get(timeout=max(min(q.deadline, next_check) - now, 0.001))
        except queue.Empty:
            continue
        if message is None:
            raise _channel_closed(q, proc, jail, run, expected, ready)
        kind = message["type"]
        if kind == "ready" and not ready:
            ready = True
            run.device = _text(message.get("device", ""), 20)
            run.confinement = _text(message.get("confinement", ""), 300)
        elif not ready:  # e.g. CUDA asked for but missing: the set-up's problem, not the student's
            raise GraderError(_text(message.get("message", f"the child process sent {kind!r} before starting"), 2000))
        elif kind == "error":  # every word of it is the student's to choose, the kind only from a fixed list
            claimed = message.get("kind")
            raise StudentError(claimed if claimed in CHILD_ERROR_KINDS else "exception",
                               _text(message.get("message", ""), 2000), _text(message.get("traceback", ""), 8000),
                               from_student=True)
        elif kind == "protocol":  # the parser's words quote what the child sent: its output, by another name
            raise StudentError("protocol", f"{q.function}'s process sent malformed data: {_text(message['message'], 400)}",
                               from_student=True)
        elif kind == "batch":
            yield expected, _checked_batch(q, message, expected)
            expected += message["count"]
        elif kind == "done":
            jail.snapshot()
            if expected != q.images:
                raise StudentError("protocol", f"{q.function} finished after {expected} of {q.images} images")
            try:
                proc.wait(timeout=2)  # let it exit on its own, so its last output is flushed
            except subprocess.TimeoutExpired:
                pass
            return
        else:
            raise StudentError("protocol", f"{q.function}'s process sent an unexpected {_text(repr(kind), 80)} message",
                               from_student=True)


def _check_memory(q: _Question, jail: Jail) -> None:
    if jail.oom_killed():
        raise _killed_at_memory_limit(q.function, q.limits)
    used = jail.memory(q.deadline)
    if used > q.limits.memory_bytes:
        raise StudentError("memory", f"Memory limit exceeded: {q.function}'s processes used "
                           f"{used / 2**20:.0f} MiB (limit {q.limits.memory_bytes / 2**20:.0f} MiB)")


def _out_of_time(q: _Question, jail: Jail, expected: int) -> StudentError:
    """The error for a question past its wall-clock time: its limit, or its guard when judged on CPU time
    (unless its CPU time ran out in the same moment)."""
    _check_cpu_time(q, jail, expected)
    done = f"loading plus all {q.images} images; {expected} graded before the limit"
    if q.cpu_limit is None:
        return StudentError("timeout", f"Time limit exceeded: {q.function} did not finish within "
                            f"{q.limits.time_limit:g} s ({done})")
    used = jail.cpu_seconds()
    spent = "an unknown part" if used is None else f"only {used:.1f}"
    return StudentError("timeout", f"Time limit exceeded: {q.function} did not finish within the wall-clock guard of "
                        f"{wall_guard(q.limits.time_limit, jail.sandbox.cpus):g} s, having used {spent} of its "
                        f"{q.cpu_limit:g} CPU seconds: the rest of the time it was waiting (sleep, a lock, input or "
                        f"output), or the machine was too busy to give it its share ({done})")


def _check_cpu_time(q: _Question, jail: Jail, expected: int) -> None:
    """Raise the timeout once the question's CPU time reaches its allowance (when judged on CPU time)."""
    if q.cpu_limit is None:
        return
    used = jail.cpu_seconds()
    if used is not None and used >= q.cpu_limit:
        per = f"{q.limits.time_limit:g} s at a {jail.sandbox.cpus or 0:.2f}-CPU cap"
        raise StudentError("timeout", f"Time limit exceeded: {q.function}'s processes used {used:.1f} CPU seconds, "
                           f"past its limit of {q.cpu_limit:g} ({per}; loading plus all {q.images} images; "
                           f"{expected} graded before the limit)")


def _checked_batch(q: _Question, message: dict, expected: int) -> np.ndarray:
    count = min(q.limits.batch_size, q.images - expected)
    if message.get("start") != expected or message.get("count") != count:
        raise StudentError("protocol", f"{q.function}'s process sent batches out of order")
    if "bad_shape" in message:
        raise StudentError("shape", f"{q.function} returned shape {message['bad_shape']} for a batch of "
                           f"{count} images; expected {(count, *q.tail_shape)}")
    array = message["array"]
    if not np.isfinite(array).all():
        bad = int(np.size(array) - np.isfinite(array).sum())
        raise StudentError("nan", f"{q.function} returned {bad} NaN or infinite values in the batch "
                           f"starting at image {expected}")
    return array


def _channel_closed(q: _Question, proc: subprocess.Popen, jail: Jail, run: ChildRun, expected: int,
                    ready: bool) -> Exception:
    """Why the child closed its channel before saying done: the error to raise."""
    try:
        proc.wait(timeout=max(min(q.deadline - time.monotonic(), 2), 0.1))
    except subprocess.TimeoutExpired:
        return StudentError("protocol", f"{q.function}'s process closed its channel to the grader "
                            f"({expected} of {q.images} images done) but kept running")
    if not ready:
        return GraderError(f"the grader's child process could not start ({_describe_exit(jail.returncode())})"
                           f"; its output:\n{run.output.text()}")
    if jail.oom_killed():
        return _killed_at_memory_limit(q.function, q.limits)
    hint = " (often: out of memory)" if jail.returncode() == -signal.SIGKILL else ""
    return StudentError("crash", f"{q.function} stopped before returning all predictions "
                        f"({expected} of {q.images} images done): {_describe_exit(jail.returncode())}{hint}")


def _close(jail: Jail, stop: threading.Event, threads: list[threading.Thread], channel: Pipe | None,
           proc: subprocess.Popen | None, run: ChildRun) -> None:
    """Cleanup, however the question ended: kill and prove gone (Jail.close), then stop the reading
    threads and close the pipes. A survivor becomes a GraderError that ends the run."""
    try:
        cleanup = jail.close()
    except ContainmentError as exc:
        raise GraderError(str(exc)) from None
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)
        if channel is not None:
            channel.close()
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()
    run.leftovers, run.leftover_files, run.cleanup_note = cleanup.leftovers, cleanup.removed, cleanup.note
    run.leftover_count = cleanup.removed_count
