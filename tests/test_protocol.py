"""The wire protocol read from raw bytes: what the child may send, and everything else refused."""
from __future__ import annotations

import io
import json
import os
import queue
import threading

import numpy as np
import pytest

from grader.protocol import HEADER_LIMIT, Pipe, read_messages

TAIL = (3,)


def npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array(out, array, allow_pickle=False)
    return out.getvalue()


def line(header: dict) -> bytes:
    return json.dumps(header).encode() + b"\n"


def messages_for(data: bytes, batch_size: int = 4) -> list:
    """Feed `data` through a real pipe into the reader; the messages it queues, up to the final None."""
    read_fd, write_fd = os.pipe()

    def write() -> None:
        try:
            os.write(write_fd, data)
        except BrokenPipeError:  # the reader stopped early, as it should on bad input
            pass
        finally:
            os.close(write_fd)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    out: queue.Queue = queue.Queue()
    stop = threading.Event()
    stream = Pipe(read_fd, stop)
    try:
        read_messages(stream, out, TAIL, batch_size)
    finally:
        stop.set()
        stream.close()
        writer.join(timeout=5)
    found = []
    while (item := out.get_nowait()) is not None:
        found.append(item)
    return found


def test_a_well_formed_stream() -> None:
    scores = np.arange(6, dtype="<f4").reshape(2, 3)
    data = line({"type": "ready", "device": "cpu"}) + line({"type": "batch", "start": 0, "count": 2}) + npy(scores) \
        + line({"type": "done", "seconds": 1.0})
    got = messages_for(data)
    assert [m["type"] for m in got] == ["ready", "batch", "done"]
    np.testing.assert_array_equal(got[1]["array"], scores)


def test_a_wrong_shape_is_reported_before_its_data_is_read() -> None:
    data = line({"type": "batch", "start": 0, "count": 2}) + npy(np.zeros((2, 5), "<f4"))
    assert messages_for(data) == [{"type": "batch", "start": 0, "count": 2, "bad_shape": (2, 5)}]


@pytest.mark.parametrize(("payload", "message"), [
    (line({"type": "batch", "start": 0, "count": 2}) + npy(np.zeros((2, 3), "<f8")), "unexpected array dtype float64"),
    (line({"type": "batch", "start": 0, "count": 2}) + npy(np.asfortranarray(np.zeros((2, 3), "<f4"))),
     "unexpected array dtype float32"),
    (line({"type": "batch", "start": 0, "count": 2}) + b"\x93NUMPY\x02\x00" + (2**30).to_bytes(4, "little"),
     "unsupported .npy version (2, 0)"),
    (line({"type": "batch", "start": 0, "count": 9}), "bad batch size 9"),
    (line({"type": "batch", "start": 0, "count": "2"}), "bad batch size '2'"),
    (line({"type": "shell", "cmd": "rm"}), "unknown message"),
    (b"[1, 2]\n", "unknown message"),
    (b"not json\n", "Expecting value"),
    (b"[" * 60000 + b"\n", "RecursionError"),
    (line({"type": "batch", "start": 0, "count": 2}) + npy(np.zeros((2, 3), "<f4"))[:-5], "stream ended inside a message"),
])
def test_malformed_input_ends_in_one_protocol_message(payload: bytes, message: str) -> None:
    got = messages_for(payload)
    assert len(got) == 1 and got[0]["type"] == "protocol" and message in got[0]["message"], got


def test_a_header_line_is_capped() -> None:
    data = b'{"type": "ready", "pad": "' + b"x" * (2 * HEADER_LIMIT) + b'"}\n'
    got = messages_for(data)
    assert len(got) == 1 and got[0]["type"] == "protocol"


def test_an_object_array_is_refused_without_unpickling() -> None:
    payload = io.BytesIO()
    np.lib.format.write_array(payload, np.array([object()] * 6, dtype=object).reshape(2, 3), allow_pickle=True)
    got = messages_for(line({"type": "batch", "start": 0, "count": 2}) + payload.getvalue())
    assert got[0]["type"] == "protocol" and "dtype object" in got[0]["message"]
