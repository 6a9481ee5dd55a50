"""The wire protocol between the child (grader/child.py, which writes it) and the grader (which reads it).

The child writes to a private pipe, in order:
- one JSON line per message, at most HEADER_LIMIT bytes: {"type": "ready", "device", "confinement"}, then
  {"type": "batch", "start", "count"} per batch, and {"type": "done", "seconds"} at the end, or
  {"type": "error", "kind", "message", "traceback"} in place of the rest;
- after each batch line, one .npy payload of version 1.0 (whose header length field is 16 bits): a
  little-endian float32, C-ordered array of shape (count, *tail_shape).
The reader trusts nothing: it refuses any other header, dtype, order or shape before it reads a byte of
data, and never unpickles. Reads give up once grading stops, so a process that keeps the pipe open
cannot stall the grader. child.py imports nothing from the grader, so the format lives in both places.
"""
from __future__ import annotations

import json
import os
import queue
import select
import threading
from typing import Any, Iterator, cast

import numpy as np

HEADER_LIMIT = 64 * 1024
POLL_SECONDS = 0.2
SCORE_DTYPES = (np.dtype("<f4"),)
MESSAGE_TYPES = ("ready", "batch", "error", "done")


class Pipe:
    """Blocking reads from a pipe that give up once `stop` is set: a stray process may still hold the
    other end open, and a thread blocked in a plain read() could then never be joined."""

    def __init__(self, fd: int, stop: threading.Event):
        self.fd, self.stop, self.buffer = fd, stop, bytearray()

    def _fill(self) -> bool:
        """Append what the pipe has; False at end of stream. Once grading stopped, an idle pipe raises
        EOFError (data already waiting is still read, so the last output of the child is not lost)."""
        while True:
            if select.select([self.fd], [], [], POLL_SECONDS)[0]:
                chunk = os.read(self.fd, 1 << 16)
                self.buffer += chunk
                return bool(chunk)
            if self.stop.is_set():
                raise EOFError("grading stopped")

    def read(self, n: int) -> bytes:
        while len(self.buffer) < n and self._fill():
            pass
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    def readline(self, limit: int) -> bytes:
        while b"\n" not in self.buffer and len(self.buffer) < limit and self._fill():
            pass
        end = self.buffer.find(b"\n", 0, limit)
        return self.read(limit if end < 0 else end + 1)

    def chunks(self) -> Iterator[bytes]:
        while self.buffer or self._fill():
            yield self.read(len(self.buffer))

    def close(self) -> None:
        os.close(self.fd)


def _read_exact(stream: Pipe, n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise EOFError("stream ended inside a message")
    return data


class BadShape(Exception):
    def __init__(self, shape: tuple[int, ...]):
        super().__init__(f"shape {shape}")
        self.shape = shape


def read_array(stream: Pipe, tail_shape: tuple[int, ...], count: int) -> np.ndarray:
    """Read one .npy payload; refuse anything but a version 1.0 header (whose length field is 16 bits, so
    a header cannot make us read much) of a float32 C array of the expected shape, before reading data."""
    source = cast(Any, stream)  # a file-like object to numpy: Pipe has read(n)
    version = np.lib.format.read_magic(source)
    if version != (1, 0):
        raise ValueError(f"unsupported .npy version {version}")
    shape, fortran, dtype = np.lib.format.read_array_header_1_0(source)
    if dtype not in SCORE_DTYPES or fortran:
        raise ValueError(f"unexpected array dtype {dtype}")
    if tuple(shape) != (count, *tail_shape):
        raise BadShape(tuple(shape))
    return np.frombuffer(_read_exact(stream, int(np.prod(shape)) * dtype.itemsize), dtype).reshape(shape)


def _put(messages: "queue.Queue", item, stop: threading.Event) -> None:
    """Put into the bounded queue (so a chatty child cannot fill the grader's memory) unless grading stopped."""
    while not stop.is_set():
        try:
            messages.put(item, timeout=POLL_SECONDS)
            return
        except queue.Full:
            continue


def read_messages(stream: Pipe, messages: "queue.Queue", tail_shape: tuple[int, ...], batch_size: int) -> None:
    """Thread: parse the child's messages into `messages`, each a header dict (a batch's with its "array",
    or "bad_shape"); {"type": "protocol", "message": ...} for anything malformed; None at the end."""
    try:
        while line := stream.readline(HEADER_LIMIT):
            header = json.loads(line)
            if not isinstance(header, dict) or header.get("type") not in MESSAGE_TYPES:
                raise ValueError(f"unknown message {line[:80]!r}")
            if header["type"] == "batch":
                count = header.get("count")
                if not isinstance(count, int) or not 0 < count <= batch_size:
                    raise ValueError(f"bad batch size {count!r}")
                try:
                    header["array"] = read_array(stream, tail_shape, count)
                except BadShape as exc:
                    _put(messages, {**header, "bad_shape": exc.shape}, stream.stop)
                    break
            _put(messages, header, stream.stop)
    except (EOFError, OSError) as exc:
        if not stream.stop.is_set():
            _put(messages, {"type": "protocol", "message": str(exc)}, stream.stop)
    except ValueError as exc:  # JSON or .npy header refused
        _put(messages, {"type": "protocol", "message": str(exc)[:300]}, stream.stop)
    except Exception as exc:  # anything else the child can make the parser raise, e.g. RecursionError
        _put(messages, {"type": "protocol", "message": f"{type(exc).__name__}: {str(exc)[:300]}"}, stream.stop)
    finally:
        _put(messages, None, stream.stop)
