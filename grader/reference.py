"""Read and check the held-out reference data (layout in README: images and labels in separate files)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from grader.build_reference import read_class_list, seg_stems


class ReferenceDataError(ValueError):
    """The reference data is missing or malformed: the grader's (staff's) problem, not the student's."""


@dataclass(frozen=True)
class ReferenceSet:
    question: str
    classes: list[str]
    images: np.ndarray  # uint8: (N, 28, 28) for q1, (N, H, W, 3) RGB for q2
    labels: np.ndarray  # int64 (N,) for q1, uint8 (N, H, W) for q2
    names: list[str]

    def __len__(self) -> int:
        return len(self.images)


def _classes(folder: Path) -> list[str]:
    path = folder / "classes.txt"
    if not path.is_file():
        raise ReferenceDataError(f"{path} is missing")
    classes = read_class_list(path)
    if len(classes) < 2:
        raise ReferenceDataError(f"{path}: expected at least 2 class names, got {len(classes)}")
    return classes


def _npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ReferenceDataError(f"{path} is missing")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ReferenceDataError(f"{path}: not a plain .npy array ({exc})") from None


def load_q1(folder: Path) -> ReferenceSet:
    classes = _classes(folder)
    images, labels = _npy(folder / "images.npy"), _npy(folder / "labels.npy")
    if images.dtype != np.uint8 or images.ndim != 3 or len(images) == 0:
        raise ReferenceDataError(f"{folder}/images.npy: expected uint8 (N, H, W), got {images.dtype} {images.shape}")
    if labels.shape != (len(images),) or labels.dtype.kind not in "iu":
        raise ReferenceDataError(f"{folder}/labels.npy: expected integers ({len(images)},), got {labels.dtype} {labels.shape}")
    if labels.min() < 0 or labels.max() >= len(classes):
        raise ReferenceDataError(f"{folder}/labels.npy: labels must lie in 0..{len(classes) - 1}")
    return ReferenceSet("q1", classes, images, labels.astype(np.int64), [str(i) for i in range(len(images))])


def load_q2(folder: Path) -> ReferenceSet:
    classes = _classes(folder)
    stems = seg_stems(folder / "images")
    if not stems:
        raise ReferenceDataError(f"{folder}/images: no .jpg images")
    images, labels = [], []
    for stem in stems:
        label_path = folder / "labels" / f"{stem}.png"
        if not label_path.is_file():
            raise ReferenceDataError(f"{label_path} is missing (every image needs a label)")
        with Image.open(folder / "images" / f"{stem}.jpg") as img:
            images.append(np.asarray(img.convert("RGB")))
        with Image.open(label_path) as lab:
            labels.append(np.asarray(lab))
        if labels[-1].shape != images[-1].shape[:2]:
            raise ReferenceDataError(f"{label_path}: label {labels[-1].shape} does not match its image {images[-1].shape[:2]}")
        if labels[-1].max() >= len(classes):
            raise ReferenceDataError(f"{label_path}: class id {labels[-1].max()} >= {len(classes)} classes")
    sizes = {im.shape for im in images}
    if len(sizes) > 1:
        raise ReferenceDataError(f"{folder}/images: all images must share one size, found {sorted(sizes)}")
    return ReferenceSet("q2", classes, np.stack(images), np.stack(labels).astype(np.uint8), stems)


LOADERS = {"q1": load_q1, "q2": load_q2}


def load_reference(data_dir: Path, question: str) -> ReferenceSet:
    return LOADERS[question](data_dir / question)
