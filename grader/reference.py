"""Read and check the held-out reference data (layout in README: images and labels in separate files)."""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

IDX_DTYPES: dict[int, np.dtype] = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
                                   0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4")}
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
FASHION_MNIST_FILES = {"train": "train-{}-idx{}-ubyte", "test": "t10k-{}-idx{}-ubyte"}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzipped or not): 2 zero bytes, a dtype code, the number of dims, big-endian sizes."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic {raw[:4].hex()})")
    ndim = raw[3]
    shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    expected = 4 + 4 * ndim + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path}: expected {expected} bytes for shape {shape}, got {len(raw)}")
    return np.frombuffer(raw, dtype, offset=4 + 4 * ndim).reshape(shape).astype(dtype.newbyteorder("="))


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{folder}: neither {stem} nor {stem}.gz found")


def read_fashion_mnist(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of one official split ("train" or "test")."""
    pattern = FASHION_MNIST_FILES[split]
    images = read_idx(_find(folder, pattern.format("images", 3)))
    labels = read_idx(_find(folder, pattern.format("labels", 1))).astype(np.int64)
    if images.ndim != 3 or images.dtype != np.uint8 or len(images) != len(labels):
        raise ValueError(f"{folder}: {split} images {images.shape} {images.dtype} do not match labels {labels.shape}")
    return images, labels


def seg_stems(folder: Path) -> list[str]:
    """Image stems in the assignment's order: a sorted (lexicographic) glob, so 0, 1, 10, 100, 11, ..."""
    return sorted(p.stem for p in folder.glob("*.jpg"))


def read_class_list(path: Path) -> list[str]:
    """Class names from `classes.txt`, one per line, optionally prefixed by a tab-separated id."""
    return [line.split("\t")[-1].strip() for line in path.read_text().splitlines() if line.strip()]


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
