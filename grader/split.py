"""The public/private split of a question's held-out images: which of them the student sees scored now,
and which decide the grade later (Kaggle's and Codabench's answer to tuning a model on the test set).

The rule is fixed and written down, so that it is the same on every machine and in every run: image i
(its index in the reference set) of question q is private when the first 8 bytes of
sha256("<seed>/<q>/<i>"), read as a big-endian integer, are below fraction x 2^64. Each image is decided
alone, so adding images never moves another across. The seed is `[grader].split_seed` in the config, which
student code never reads; an instructor who wants the split unguessable from this source sets their own.
"""
from __future__ import annotations

import hashlib

import numpy as np

DEFAULT_SEED = "mp-grader"
PUBLIC_SEED = (f"[grader].split_seed is the public default ({DEFAULT_SEED!r}): with this source a student computes "
               "which images are private and which are the memorization probe's copies. Set it to a secret of your "
               "own, e.g. the output of python3 -c 'import secrets; print(secrets.token_hex(16))'")


def private_mask(n: int, fraction: float, seed: str, question: str) -> np.ndarray:
    """(n,) bool: True for the images of the private part."""
    line = int(fraction * 2**64)
    return np.fromiter((int.from_bytes(hashlib.sha256(f"{seed}/{question}/{i}".encode()).digest()[:8], "big") < line
                        for i in range(n)), dtype=bool, count=n)


def split_record(fraction: float, seed: str) -> dict:
    """What a stored report keeps of a split, so that a rescore can tell whether a new config splits the
    images the same way (the seed itself stays in the config)."""
    return {"private_fraction": fraction, "seed_sha256": hashlib.sha256(seed.encode()).hexdigest()[:16]}
