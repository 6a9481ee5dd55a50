"""Held-out images that are public: recognised by compact fingerprints of the public sets this project knows.

A grade is only as secret as its held-out labels. Fashion-MNIST's train and t10k splits and the assignment's
published segmentation images (train, val, test) are in every student's hands, labels and all: a submission
that ships a table (image -> label) scores full marks without a model on a held-out set drawn from them. The
fingerprint of an image is the first 8 bytes of sha256 over its decoded pixels (Q1: the 28 x 28 uint8 array;
Q2: the RGB array Pillow decodes, as the grader loads it), so a copy is recognised whatever its file name or
container; the fingerprints of each public set are committed (grader/public_fingerprints.npz, about 570 KB)
and rebuilt from the sets themselves by:

    python -m grader.public_data --fashion-mnist DIR --seg DIR [--out grader/public_fingerprints.npz]

The sets' licenses and attribution stay with the sets (Fashion-MNIST: MIT, Zalando Research; the segmentation
images: COCO / COCO-Stuff, see the data's PROVENANCE.md); only these hashes are kept here.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grader.reference import ReferenceSet, read_fashion_mnist, seg_stems

FINGERPRINTS = Path(__file__).with_name("public_fingerprints.npz")
SETS = {"q1": ("Fashion-MNIST train", "Fashion-MNIST t10k"),
        "q2": ("assignment segmentation train", "assignment segmentation val", "assignment segmentation test")}
PUBLIC_SHARE = 0.01  # more of a held-out set than this from one public set, and its grade can be had by lookup


def fingerprints(images: np.ndarray) -> np.ndarray:
    """(N,) uint64: the first 8 bytes of sha256 over each image's pixels (C order, uint8)."""
    flat = np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), -1)
    return np.array([int.from_bytes(hashlib.sha256(row.tobytes()).digest()[:8], "big") for row in flat],
                    dtype=np.uint64)


@dataclass(frozen=True)
class PublicShare:
    question: str
    public_set: str  # the known set most of the held-out images come from
    share: float  # of the held-out images, in [0, 1]
    images: int  # held-out images

    @property
    def too_public(self) -> bool:
        return self.share > PUBLIC_SHARE

    def __str__(self) -> str:
        return (f"{self.question.upper()}: {100 * self.share:.0f} % of its {self.images} held-out images are "
                f"{self.public_set} images, whose labels are public")


def public_share(ref: ReferenceSet) -> PublicShare:
    """How much of a held-out set is the known public set it overlaps most."""
    known = np.load(FINGERPRINTS, allow_pickle=False)
    mine = fingerprints(ref.images)
    best = PublicShare(ref.question, "none", 0.0, len(ref))
    for name in SETS.get(ref.question, ()):
        share = float(np.isin(mine, known[name]).mean()) if name in known.files else 0.0
        if share > best.share:
            best = PublicShare(ref.question, name, share, len(ref))
    return best


def _seg_images(folder: Path) -> np.ndarray:
    from PIL import Image

    images = []
    for stem in seg_stems(folder):
        with Image.open(folder / f"{stem}.jpg") as img:
            images.append(np.asarray(img.convert("RGB")))
    return np.stack(images)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fashion-mnist", type=Path, required=True, help="folder with the Fashion-MNIST IDX files")
    p.add_argument("--seg", type=Path, required=True, help="the assignment's data folder (train/, val/, test/)")
    p.add_argument("--out", type=Path, default=FINGERPRINTS, help=f"where they go (default: {FINGERPRINTS})")
    return p


def main(args: argparse.Namespace) -> int:
    found = {}
    for name, split in zip(SETS["q1"], ("train", "test")):
        found[name] = np.sort(fingerprints(read_fashion_mnist(args.fashion_mnist, split)[0]))
    for name, split in zip(SETS["q2"], ("train", "val", "test")):
        found[name] = np.sort(fingerprints(_seg_images(args.seg / split)))
    np.savez(args.out, allow_pickle=False, **found)
    print("\n".join(f"{name}: {len(values)} images" for name, values in found.items()) + f"\n-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
