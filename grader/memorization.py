"""The memorization probe: tell a lookup of public labels from a model by how it moves (#27).

A submission that ships a table from each public image's bytes to its label scores full marks on a held-out
set drawn from public data, and its score alone cannot tell it from a model. Its behaviour can: a model's
prediction barely moves when a few grey levels of noise are added to an image, while a table keyed on the
bytes knows nothing of the copy. So the grader mixes such copies of some held-out images among the
originals, at positions drawn from the secret split seed, scores the copies apart, and flags for staff a
submission whose metric on the copies falls far below its metric on the same images' originals. It is never
a score change: it goes to extra_data (hidden) and the batch's scores.csv and summary.md.

What it cannot see: a lookup built to be robust (the nearest public image in pixel space) moves no more than
a model does. The probe finds tables keyed on the exact images, the attack the review found; the defence
against the rest is held-out data of one's own.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from grader.metrics import ClassificationAccumulator, SegmentationAccumulator

METRIC = {"q1": "accuracy", "q2": "mIoU"}  # compared between the originals and their copies
NOISE = 4  # grey levels, at most, added to or taken from each pixel of a copy


def _rng(seed: str, question: str, what: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}/{question}/memorization/{what}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "big"))


def chosen(n: int, fraction: float, seed: str, question: str) -> np.ndarray:
    """Sorted indices of the held-out images that get a copy: round(fraction x n) of them, at least one."""
    count = min(n, max(1, round(fraction * n)))
    return np.sort(_rng(seed, question, "chosen").choice(n, count, replace=False))


def transformed(question: str, images: np.ndarray, seed: str) -> np.ndarray:
    """Copies of `images` that keep every label: seeded noise of at most NOISE grey levels on every pixel.
    Gentler than a shift or a mirror, which moved models trained without augmentation by several points
    (docs/benchmarks.md). No copy of the committed images has the bytes of any image (tests/test_memorization.py)."""
    noise = _rng(seed, question, "noise").integers(-NOISE, NOISE + 1, size=images.shape, dtype=np.int16)
    return np.clip(images.astype(np.int16) + noise, 0, 255).astype(np.uint8)


@dataclass
class Probe:
    """The images a question's child sees (the originals in their order, copies mixed in) and the copies'
    scoring. `route` takes each batch the child returns and gives back the originals' part of it."""

    question: str
    labels: np.ndarray  # the originals'
    source: np.ndarray  # for each copy, in the order the child sees them: the original it copies
    is_copy: np.ndarray  # (originals + copies,) bool: which positions the child sees hold a copy
    images: np.ndarray  # what the child sees
    classes: int
    _copies: ClassificationAccumulator | SegmentationAccumulator = field(init=False)
    _originals: ClassificationAccumulator | SegmentationAccumulator = field(init=False)
    _has_copy: np.ndarray = field(init=False)
    _copies_before: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        kind = ClassificationAccumulator if self.question == "q1" else SegmentationAccumulator
        self._copies, self._originals = kind(self.classes), kind(self.classes)
        self._has_copy = np.zeros(len(self.labels), bool)
        self._has_copy[self.source] = True
        self._copies_before = np.concatenate([[0], np.cumsum(self.is_copy)])

    def route(self, start: int, scores: np.ndarray) -> tuple[int, np.ndarray]:
        """(index of the first original in the batch, the originals' scores) for a batch of the child's
        scores starting at position `start`; the copies' scores, and their originals', are kept apart."""
        copy = self.is_copy[start:start + len(scores)]
        copies_before = int(self._copies_before[start])
        first = start - copies_before  # originals before this batch
        if copy.any():
            index = np.arange(copies_before, copies_before + int(copy.sum()))
            self._copies.update(scores[copy], self.labels[self.source[index]])
        originals = scores[~copy]
        mine = self._has_copy[first:first + len(originals)]
        if mine.any():
            self._originals.update(originals[mine], self.labels[first:first + len(originals)][mine])
        return first, originals

    def result(self) -> dict:
        """The metric on the copied images' originals and on their copies, and the drop between them."""
        metric = METRIC[self.question]
        originals, copies = (_number(acc.compute()[metric]) for acc in (self._originals, self._copies))
        drop = None if originals is None or copies is None else round(originals - copies, 4)
        return {"metric": metric, "copies": len(self.source), "originals": originals, "copied": copies, "drop": drop}


def _number(x: float) -> float | None:
    return None if x != x else round(float(x), 4)


def verdict(measured: dict, line: float) -> dict:
    """`measured` (Probe.result) judged against the config's line, in this one place: at grading, and again
    when a rescore brings a new line."""
    drop = measured.get("drop")
    return {**measured, "line": line, "flagged": isinstance(drop, (int, float)) and drop > line}


def build(question: str, images: np.ndarray, labels: np.ndarray, classes: int, fraction: float, seed: str) -> Probe:
    """The probe of one question: which images are copied, how, and where each copy sits, all from `seed`."""
    source = chosen(len(images), fraction, seed, question)
    source = source[_rng(seed, question, "order").permutation(len(source))]
    copies = transformed(question, images[source], seed)
    total = len(images) + len(source)
    is_copy = np.zeros(total, bool)
    is_copy[_rng(seed, question, "positions").choice(total, len(source), replace=False)] = True
    shown = np.empty((total, *images.shape[1:]), images.dtype)
    shown[~is_copy], shown[is_copy] = images, copies
    return Probe(question, labels, source, is_copy, shown, classes)
