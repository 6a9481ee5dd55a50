"""Prediction-file mode (the course's own): score an uploaded .npy of predictions instead of running code.

Q1: integer labels (N,), in the order of the kit's q1/images.npy. Q2: uint8 (N, C, H, W) probabilities in
the course's floor(255 p) format, or integer labels (N, H, W) for IoU alone (AP needs scores), in the order
of the kit's sorted q2/images/. The header is read and checked first, shape, dtype (no Python objects:
nothing is unpickled) and the file's exact size, and the array is then read in batches from a memory map,
so a file of any size costs no more memory than a batch. No student code runs.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Generator

import numpy as np

from grader.runner import StudentError

MAX_HEADER = 10_000


def _header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) from the .npy header, without reading the data."""
    fmt = np.lib.format
    with open(path, "rb") as f:
        try:
            version = fmt.read_magic(f)
            reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = reader(f, max_header_size=MAX_HEADER)
        except (ValueError, OSError, SyntaxError) as exc:
            raise StudentError("predictions", f"{path.name} is not a NumPy .npy file ({exc}); save it with np.save") from None
        return shape, dtype, f.tell()


def _open(path: Path, question: str, n: int, num_classes: int, image_shape: tuple[int, int]) -> tuple[np.ndarray, bool]:
    """The checked array as a read-only memory map, and whether it holds labels (not scores)."""
    if not path.is_file():
        raise StudentError("predictions", f"No {path.name} at the top of the submission: in prediction-file mode "
                           f"{question.upper()} grades that file (made with np.save)")
    shape, dtype, offset = _header(path)
    if dtype.hasobject:
        raise StudentError("predictions", f"{path.name} holds Python objects (dtype {dtype}); the grader loads no "
                           "pickles: save a plain numeric array")
    expected_size, size = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize, os.stat(path).st_size
    if size != expected_size:
        raise StudentError("predictions", f"{path.name} is {size} bytes where its header says "
                           f"{expected_size}: the file is cut short or has bytes after the array")
    h, w = image_shape
    wanted: dict[tuple[int, ...], str]
    if question == "q1":
        wanted = {(n,): "integer labels"}
    else:
        wanted = {(n, num_classes, h, w): "uint8 probabilities, floor(255 p)", (n, h, w): "integer labels"}
    if tuple(shape) not in wanted:
        options = " or ".join(f"{s} ({what})" for s, what in wanted.items())
        raise StudentError("predictions", f"{path.name} has shape {tuple(shape)}; expected {options}, in the order "
                           "of the test images")
    labels = wanted[tuple(shape)] == "integer labels"
    if labels and dtype.kind not in "iu":
        raise StudentError("predictions", f"{path.name}: labels must be integers, got dtype {dtype}")
    if not labels and dtype != np.uint8:
        raise StudentError("predictions", f"{path.name}: probabilities must be uint8 (floor(255 p)), got dtype {dtype}")
    return np.load(path, mmap_mode="r", allow_pickle=False), labels


def batches(path: Path, question: str, n: int, num_classes: int, image_shape: tuple[int, int],
            batch_size: int) -> tuple[bool, Generator[tuple[int, np.ndarray], None, None]]:
    """Whether the file holds labels, and its batches as the metrics take them: Q1 one-hot float32 scores
    (N, C), Q2 uint8 scores (N, C, H, W), labels turned one-hot (255 for the labelled class)."""
    array, labels = _open(path, question, n, num_classes, image_shape)

    def generate() -> Generator[tuple[int, np.ndarray], None, None]:
        for start in range(0, n, batch_size):
            chunk = np.asarray(array[start : start + batch_size])
            if not labels:
                yield start, chunk
                continue
            if chunk.size and (chunk.min() < 0 or chunk.max() >= num_classes):
                bad = int(np.flatnonzero((chunk < 0) | (chunk >= num_classes))[0]) // max(chunk[0].size, 1)
                raise StudentError("predictions", f"{path.name}: image {start + bad} has a label outside 0..{num_classes - 1}")
            classes = np.arange(num_classes).reshape((1, num_classes) + (1,) * (chunk.ndim - 1))
            hit = np.expand_dims(chunk, 1) == classes
            yield start, hit.astype(np.float32) if question == "q1" else hit.astype(np.uint8) * np.uint8(255)

    return labels, generate()


def check_file(path: Path, question: str, num_classes: int, image_shape: tuple[int, int]) -> str:
    """Everything about an uploaded file but the number of images (which only the grader's data knows):
    a line saying what it holds, or StudentError. For `make submission-zip`."""
    n = (_header(path)[0] or (0,))[0] if path.is_file() else 0
    labels, chunks = batches(path, question, n, num_classes, image_shape, 1000)
    for _ in chunks:  # reads it all: the labels' range, the file's every byte
        pass
    return f"{path.name}: {n} images, {'labels' if labels else 'probabilities'}, well-formed"
