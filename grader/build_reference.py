"""Build the `reference_data/` layout from the course's source formats.

    python -m grader.build_reference --q1-images X.npy --q1-labels Y.npy --seg-split DIR --out SECRET

Q1 comes from the instructor's own arrays (an (N, 28, 28) uint8 .npy of images, the course's format for its
secret test, and an (N,) .npy of integer labels), or from the official Fashion-MNIST IDX files
(--fashion-mnist: public labels, for self-grading only); Q2 from a folder of `N.jpg` images and `N.png`
labels, the instructor's own. Images and labels are written to separate files so that labels can be locked
away from student code. A held-out set taken from a public one is said so (grader/public_data.py).

The folder is built beside --out and renamed into place only once it loads as the grader loads it: an
existing folder is never merged into (old images would be graded with the new), and is replaced only
with --replace.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from grader.public_data import public_share
from grader.reference import (FASHION_MNIST_CLASSES, ReferenceDataError, load_reference, read_class_list,
                              read_fashion_mnist, seg_stems)

def build_q1(images: np.ndarray, labels: np.ndarray, classes: tuple[str, ...], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "images.npy", np.ascontiguousarray(images, dtype=np.uint8))
    np.save(out / "labels.npy", np.ascontiguousarray(labels, dtype=np.int64))
    (out / "classes.txt").write_text("".join(f"{c}\n" for c in classes))


def read_arrays(images_path: Path, labels_path: Path, classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The instructor's Q1 arrays, checked: images (N, 28, 28) uint8, labels (N,) integers naming a class."""
    try:
        images, labels = (np.load(p, allow_pickle=False) for p in (images_path, labels_path))
    except (OSError, ValueError) as exc:
        raise ValueError(f"not a plain .npy array: {exc}") from None
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) == 0:
        raise ValueError(f"{images_path}: expected uint8 images of shape (N, 28, 28), got {images.dtype} {images.shape}")
    if labels.shape != (len(images),) or labels.dtype.kind not in "iu":
        raise ValueError(f"{labels_path}: expected {len(images)} integer labels, one per image, got {labels.dtype} "
                         f"{labels.shape}")
    if labels.min() < 0 or labels.max() >= len(classes):
        raise ValueError(f"{labels_path}: labels must name one of the {len(classes)} classes (0..{len(classes) - 1}), "
                         f"found {labels.min()}..{labels.max()}")
    return images, labels


def build_q2(split_dir: Path, classes: list[str], out: Path) -> int:
    """Copy `N.jpg` images and `N.png` labels (checked: single channel, ids < number of classes, same size)."""
    stems = seg_stems(split_dir)
    if not stems:
        raise FileNotFoundError(f"{split_dir}: no .jpg images")
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    for stem in stems:
        label_path = split_dir / f"{stem}.png"
        if not label_path.is_file():
            raise FileNotFoundError(f"{split_dir}: image {stem}.jpg has no label {stem}.png")
        with Image.open(split_dir / f"{stem}.jpg") as img, Image.open(label_path) as lab:
            label = np.asarray(lab)
            if label.ndim != 2 or label.max() >= len(classes) or img.size != lab.size:
                raise ValueError(f"{label_path}: expected one channel of ids < {len(classes)} at {img.size}, "
                                 f"got shape {label.shape} with max {label.max()}")
        shutil.copyfile(split_dir / f"{stem}.jpg", out / "images" / f"{stem}.jpg")
        shutil.copyfile(label_path, out / "labels" / f"{stem}.png")
    (out / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    return len(stems)


KIT_README = """# Test images for prediction-file grading

Predict every image here and upload the predictions as .npy files (`np.save`), at the top of your zip:

{items}

The order is the order of the images: {order}. No labels are included: the grader holds them.
"""


def write_kit(reference: Path, kit: Path) -> list[str]:
    """The student-facing kit of a reference folder: its test images without labels, and a README saying
    which files to upload, their shape and dtype, in which order. Returns what it holds, per question."""
    from grader.config import PREDICTION_FILES

    items, order, held = [], [], []
    if (reference / "q1").is_dir():
        ref = load_reference(reference, "q1")
        (kit / "q1").mkdir(parents=True)
        np.save(kit / "q1" / "images.npy", ref.images)
        shutil.copyfile(reference / "q1" / "classes.txt", kit / "q1" / "classes.txt")
        items.append(f"- `{PREDICTION_FILES['q1']}`: one row per image of `q1/images.npy` (uint8, {ref.images.shape}), "
                     f"either float scores, shape ({len(ref)}, {len(ref.classes)}) (probabilities or logits: the highest "
                     f"score is your answer, the first class winning a tie), or integer labels, shape ({len(ref)},); "
                     "the classes are numbered as in `q1/classes.txt`. No NaN or infinite scores.")
        order.append("Q1 as in `q1/images.npy`")
        held.append(f"q1: {len(ref)} images")
    if (reference / "q2").is_dir():
        ref = load_reference(reference, "q2")
        (kit / "q2" / "images").mkdir(parents=True)
        for name in ref.names:
            shutil.copyfile(reference / "q2" / "images" / f"{name}.jpg", kit / "q2" / "images" / f"{name}.jpg")
        shutil.copyfile(reference / "q2" / "classes.txt", kit / "q2" / "classes.txt")
        n, h, w = ref.labels.shape
        c = len(ref.classes)
        items.append(f"- `{PREDICTION_FILES['q2']}`: class probabilities, shape ({n}, {c}, {h}, {w}), as floats in "
                     "[0, 1] (a softmax over the classes; the grader keeps floor(255 p)) or as uint8 floor(255 p) "
                     f"(scored by AP and IoU); or integer labels, shape ({n}, {h}, {w}) (IoU only).")
        order.append("Q2 the file names of `q2/images/` sorted as strings (`sorted(glob('*.jpg'))`: 0, 1, 10, 100, 11, ...)")
        held.append(f"q2: {len(ref)} images")
    (kit / "README.md").write_text(KIT_README.format(items="\n".join(items), order="; ".join(order)))
    return held


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--q1-images", type=Path, help="Q1's held-out images: an (N, 28, 28) uint8 .npy of your own")
    p.add_argument("--q1-labels", type=Path, help="Q1's labels: an (N,) .npy of integers, in the order of the classes")
    p.add_argument("--fashion-mnist", type=Path, help="folder with the Fashion-MNIST IDX files (.gz or not): public "
                                                        "labels, for self-grading")
    p.add_argument("--q1-split", choices=("train", "test"), default="test", help="IDX split for Q1 (default: test)")
    p.add_argument("--seg-split", type=Path, help="folder of N.jpg + N.png (e.g. mp4-seg/val) for Q2")
    p.add_argument("--seg-classes", type=Path, help="classes.txt for Q2 (default: beside --seg-split)")
    p.add_argument("--out", type=Path, default=Path("reference_data"), help="output folder (default: reference_data)")
    p.add_argument("--replace", action="store_true", help="replace --out if it exists (never merged into)")
    p.add_argument("--kit", type=Path, help="also write the students' kit for prediction-file mode here: the test "
                                            "images without labels (alone: the kit of an existing --out)")
    return p


def _build(args: argparse.Namespace, out: Path) -> dict[str, str]:
    """Write the reference layout into the new folder `out`, check it loads, and say what each question holds."""
    built = {}
    if (args.q1_images is None) != (args.q1_labels is None):
        raise ValueError("give --q1-images and --q1-labels together")
    if args.q1_images is not None and args.fashion_mnist is not None:
        raise ValueError("give Q1 either as your arrays (--q1-images) or as Fashion-MNIST (--fashion-mnist), not both")
    if args.q1_images is not None:
        images, labels = read_arrays(args.q1_images, args.q1_labels, FASHION_MNIST_CLASSES)
        build_q1(images, labels, FASHION_MNIST_CLASSES, out / "q1")
        built["q1"] = f"{len(images)} images from {args.q1_images}"
    if args.fashion_mnist is not None:
        images, labels = read_fashion_mnist(args.fashion_mnist, args.q1_split)
        build_q1(images, labels, FASHION_MNIST_CLASSES, out / "q1")
        built["q1"] = f"{len(images)} images ({args.q1_split} split of {args.fashion_mnist})"
    if args.seg_split is not None:
        classes = read_class_list(args.seg_classes or args.seg_split.parent / "classes.txt")
        n = build_q2(args.seg_split, classes, out / "q2")
        built["q2"] = f"{n} images from {args.seg_split}"
    for question in built:
        if (share := public_share(load_reference(out, question))).too_public:
            built[question] += f" (warning: {share}: a self-grade set, not a secret one)"
    return built


def _kit(args: argparse.Namespace) -> int:
    if args.kit.exists():
        print(f"build_reference: {args.kit} exists; the kit goes into a new folder", file=sys.stderr)
        return 2
    try:
        held = write_kit(args.out, args.kit)
    except (OSError, ReferenceDataError) as exc:
        shutil.rmtree(args.kit, ignore_errors=True)
        print(f"build_reference: {exc}", file=sys.stderr)
        return 2
    print(f"kit for students (no labels): {', '.join(held)} -> {args.kit}")
    return 0


def main(args: argparse.Namespace) -> int:
    if args.fashion_mnist is None and args.seg_split is None and args.q1_images is None:
        if args.kit is not None:
            return _kit(args)
        print("nothing to build: give --q1-images and --q1-labels (or --fashion-mnist) and/or --seg-split", file=sys.stderr)
        return 2
    if args.kit is not None and args.kit.exists():
        print(f"build_reference: {args.kit} exists; the kit goes into a new folder", file=sys.stderr)
        return 2
    out = args.out
    if out.exists() and not args.replace:
        print(f"build_reference: {out} exists; it is never merged into: give a new folder, or --replace", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        built = _build(args, partial)
        os.chmod(partial, 0o755)
        if out.exists():  # two renames: --out is the old folder or the new one, never a mixture
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, old / out.name)
            os.rename(partial, out)
            shutil.rmtree(old)
        else:
            os.rename(partial, out)
    except (OSError, ValueError, ReferenceDataError) as exc:  # FileNotFoundError, a bad IDX or label file
        shutil.rmtree(partial, ignore_errors=True)
        print(f"build_reference: {exc}", file=sys.stderr)
        return 2
    print("\n".join(f"{question}: {what} -> {out / question}" for question, what in built.items()))
    return _kit(args) if args.kit is not None else 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
