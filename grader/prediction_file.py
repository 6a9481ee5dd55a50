"""Prediction-file mode (the course's own): score an uploaded .npy of predictions instead of running code.

Q1: integer labels (N,), or float scores (N, C), probabilities or logits, as the course's upload holds them
(the argmax decides, in the file's own dtype, the first class winning a tie), in the order of the kit's
q1/images.npy. Q2: (N, C, H, W) probabilities, uint8 in the course's floor(255 p) format or floats in [0, 1]
quantised the same way, or integer labels (N, H, W) for IoU alone (AP needs scores), in the order of the
kit's sorted q2/images/. NaN and infinite scores are refused, naming the first image that has one.

The header is read and checked first (shape, dtype, no Python objects: nothing is unpickled; the format
versions NumPy writes; the file's exact size), and the array is then read in batches from a memory map
made from that header, so a file of any size costs no more memory than a batch. No student code runs.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Generator

import numpy as np

from grader.metrics import quantize
from grader.runner import StudentError
from grader.text import printable

MAX_HEADER = 10_000
VERSIONS = ((1, 0), (2, 0), (3, 0))  # the .npy format versions NumPy writes
FLOATS = "f"  # dtype kinds read as scores
LABELS = "iu"  # dtype kinds read as class ids


def _header(path: Path) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, Fortran order, dtype, data offset) from the .npy header, without reading the data."""
    fmt = np.lib.format
    with open(path, "rb") as f:
        try:
            version = fmt.read_magic(f)
            if version not in VERSIONS:
                raise ValueError(f"format version {version[0]}.{version[1]}, which NumPy does not write")
            reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran, dtype = reader(f, max_header_size=MAX_HEADER)
        except Exception as exc:  # NumPy's header parser raises many kinds (tokenize errors too): all the file's
            raise StudentError("predictions", f"{path.name} is not a NumPy .npy file ({printable(exc)}); "
                               "save it with np.save") from None
        return shape, fortran, dtype, f.tell()


def _formats(question: str, n: int, num_classes: int, image_shape: tuple[int, int]) -> dict[tuple[int, ...], str]:
    """The shapes a file may have, and what each holds."""
    h, w = image_shape
    if question == "q1":
        return {(n,): "integer labels", (n, num_classes): "float scores (probabilities or logits; the argmax decides)"}
    return {(n, num_classes, h, w): "uint8 probabilities as floor(255 p), or float probabilities in [0, 1]",
            (n, h, w): "integer labels (IoU only)"}


def _open(path: Path, question: str, n: int, num_classes: int, image_shape: tuple[int, int]) -> tuple[np.ndarray, bool]:
    """The checked array as a read-only memory map, and whether it holds labels (not scores)."""
    if not path.is_file():
        raise StudentError("predictions", f"No {path.name} at the top of the submission: in prediction-file mode "
                           f"{question.upper()} grades that file (made with np.save)")
    shape, fortran, dtype, offset = _header(path)
    if dtype.hasobject:
        raise StudentError("predictions", f"{path.name} holds Python objects (dtype {dtype}); the grader loads no "
                           "pickles: save a plain numeric array")
    expected_size, size = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize, os.stat(path).st_size
    if size != expected_size:
        raise StudentError("predictions", f"{path.name} is {size} bytes where its header says "
                           f"{expected_size}: the file is cut short or has bytes after the array")
    wanted = _formats(question, n, num_classes, image_shape)
    if tuple(shape) not in wanted:
        options = " or ".join(f"{s} ({what})" for s, what in wanted.items())
        raise StudentError("predictions", f"{path.name} has shape {tuple(shape)}; expected {options}, in the order "
                           "of the test images")
    labels = len(shape) == (1 if question == "q1" else 3)
    if labels and dtype.kind not in LABELS:
        raise StudentError("predictions", f"{path.name}: labels must be integers, got dtype {dtype}")
    if not labels and dtype != np.uint8 and dtype.kind not in FLOATS:
        raise StudentError("predictions", f"{path.name}: scores must be floats (or, for Q2, uint8 as floor(255 p)), "
                           f"got dtype {dtype}")
    if 0 in shape:
        return np.zeros(shape, dtype), labels
    # The header was checked here; NumPy's loader is not asked again (it refuses versions the header reader takes).
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(shape), order="F" if fortran else "C"), labels


def _one_hot(chunk: np.ndarray, num_classes: int, question: str) -> np.ndarray:
    """Class ids as the metrics take scores: Q1 one-hot float32, Q2 uint8 with 255 for the class."""
    classes = np.arange(num_classes).reshape((1, num_classes) + (1,) * (chunk.ndim - 1))
    hit = np.expand_dims(chunk, 1) == classes
    return hit.astype(np.float32) if question == "q1" else hit.astype(np.uint8) * np.uint8(255)


def _first_bad(bad: np.ndarray, start: int) -> int:
    """The image index (counted in the whole file) of the first True of `bad`, a batch's mask."""
    return start + int(np.flatnonzero(bad.reshape(len(bad), -1).any(axis=1))[0])


def batches(path: Path, question: str, n: int, num_classes: int, image_shape: tuple[int, int],
            batch_size: int) -> tuple[bool, Generator[tuple[int, np.ndarray], None, None]]:
    """Whether the file holds labels, and its batches as the metrics take them: Q1 one-hot float32 scores
    (N, C) of the labels or of the argmax of float scores (in their own dtype, the first class winning a
    tie); Q2 uint8 scores (N, C, H, W), float probabilities quantised as floor(255 p), labels one-hot."""
    array, labels = _open(path, question, n, num_classes, image_shape)

    def generate() -> Generator[tuple[int, np.ndarray], None, None]:
        for start in range(0, n, batch_size):
            chunk = np.asarray(array[start : start + batch_size])
            if chunk.dtype.kind in FLOATS:
                if not np.isfinite(chunk).all():
                    raise StudentError("predictions", f"{path.name}: image {_first_bad(~np.isfinite(chunk), start)} "
                                       "has a NaN or infinite score")
                if question == "q1":
                    yield start, _one_hot(np.argmax(chunk, axis=1), num_classes, question)
                    continue
                if chunk.size and (chunk.min() < 0 or chunk.max() > 1):
                    raise StudentError("predictions", f"{path.name}: image {_first_bad((chunk < 0) | (chunk > 1), start)} "
                                       "has a probability outside [0, 1]; Q2 files hold probabilities (a softmax over "
                                       "the classes), not logits")
                yield start, quantize(chunk)
            elif not labels:
                yield start, chunk
            else:
                if chunk.size and (chunk.min() < 0 or chunk.max() >= num_classes):
                    bad = _first_bad((chunk < 0) | (chunk >= num_classes), start)
                    raise StudentError("predictions", f"{path.name}: image {bad} has a label outside 0..{num_classes - 1}")
                yield start, _one_hot(chunk, num_classes, question)

    return labels, generate()


def check_file(path: Path, question: str, num_classes: int, image_shape: tuple[int, int]) -> str:
    """Everything about an uploaded file but the number of images (which only the grader's data knows):
    a line saying what it holds, or StudentError. For `make submission-zip`."""
    n = (_header(path)[0] or (0,))[0] if path.is_file() else 0
    labels, chunks = batches(path, question, n, num_classes, image_shape, 1000)
    for _ in chunks:  # reads it all: the labels' range, the file's every byte
        pass
    dtype = _header(path)[2]
    what = "labels" if labels else ("uint8 probabilities" if dtype == np.uint8 else f"{dtype} scores")
    return f"{path.name}: {n} images, {what}, well-formed"
