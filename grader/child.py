"""The only place student code runs: import the submission's predict.py and stream raw predictions back.

Started by grader.runner as a separate process (`python -I child.py ...`) with the submission folder as
working directory. It gets images, never labels, and writes messages to a private pipe: one JSON line
each, followed by an .npy array for a batch. The grader reads them without pickle and validates
everything itself. This file imports nothing from the grader package, so no student file can shadow it.
"""
from __future__ import annotations

import io
import json
import os
import sys
import time
import traceback

TRACEBACK_LIMIT = 6000


def student_traceback(exc: BaseException, root: str) -> str:
    """The exception with only the frames inside the submission (the grader's frames help nobody)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if os.path.abspath(f.filename).startswith(root)]
    text = "".join(traceback.format_list(frames)) + "".join(traceback.format_exception_only(type(exc), exc))
    if frames:
        text = "Traceback (most recent call last, submission files only):\n" + text
    return text if len(text) <= TRACEBACK_LIMIT else "...\n" + text[-TRACEBACK_LIMIT:]


class Channel:
    def __init__(self, fd: int):
        self.stream = os.fdopen(fd, "wb")

    def send(self, header: dict, array=None) -> None:
        import numpy as np

        self.stream.write(json.dumps(header).encode() + b"\n")
        if array is not None:
            payload = io.BytesIO()  # write_array needs a seekable file for a real file object; a pipe is not
            np.lib.format.write_array(payload, array, allow_pickle=False)
            self.stream.write(payload.getbuffer())
        self.stream.flush()

    def fail(self, kind: str, message: str, exc: BaseException | None = None, root: str = "") -> None:
        self.send({"type": "error", "kind": kind, "message": message,
                   "traceback": student_traceback(exc, root) if exc is not None else ""})


def to_array(out, function: str):
    """The student's return value as a C-contiguous float32 array, or a TypeError saying what it was."""
    import numpy as np
    import torch

    if isinstance(out, torch.Tensor):
        if not (out.is_floating_point() or out.dtype in (torch.int64, torch.int32, torch.uint8)):
            raise TypeError(f"{function} returned a tensor of dtype {out.dtype}; expected floating-point scores")
        return np.ascontiguousarray(out.detach().to("cpu", torch.float32).numpy())
    if isinstance(out, np.ndarray) and out.dtype.kind in "fiu":
        return np.ascontiguousarray(out, dtype=np.float32)
    raise TypeError(f"{function} returned {type(out).__name__}; expected a torch.Tensor of scores")


def main(question: str, images_path: str, batch_size: int, device_name: str, fd: int) -> int:
    channel = Channel(fd)
    root = os.path.abspath(os.getcwd())
    sys.path.insert(0, root)
    import numpy as np
    import torch

    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    elif device_name == "cuda" and not torch.cuda.is_available():
        channel.fail("device", "CUDA was asked for (--device cuda), but torch sees no CUDA device here; "
                               "grade with --device cpu or --device auto")
        return 0
    device = torch.device(device_name)
    function = f"predict_{question}"
    started = time.monotonic()
    try:
        import predict
    except BaseException as exc:  # SystemExit and KeyboardInterrupt from an import are the student's too
        channel.fail("import", f"importing predict.py failed: {type(exc).__name__}: {exc}", exc, root)
        return 0
    fn = getattr(predict, function, None)
    if not callable(fn):
        channel.fail("missing", f"predict.py has no function {function}(images)")
        return 0
    images = np.load(images_path, mmap_mode="r", allow_pickle=False)
    channel.send({"type": "ready", "device": device_name, "import_seconds": time.monotonic() - started})
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.array(images[start : start + batch_size])).to(device)
        x = batch.unsqueeze(1) if question == "q1" else batch.permute(0, 3, 1, 2)
        x = x.float().div_(255).contiguous()
        try:
            with torch.inference_mode():
                out = to_array(fn(x), function)
        except torch.cuda.OutOfMemoryError as exc:
            channel.fail("cuda_oom", f"{function} ran out of GPU memory on a batch of {len(x)} images: {exc}", exc, root)
            return 0
        except SystemExit as exc:
            channel.fail("exit", f"{function} called sys.exit({exc.code!r}) instead of returning scores", exc, root)
            return 0
        except BaseException as exc:
            channel.fail("exception", f"{function} raised {type(exc).__name__}: {exc}", exc, root)
            return 0
        channel.send({"type": "batch", "start": start, "count": len(x)}, out)
    channel.send({"type": "done", "seconds": time.monotonic() - started})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])))
