"""Copied work across a batch: identical weight files, and predictions that share their mistakes.

Two models trained apart agree on most images they get right, since right answers coincide by definition;
what gives a copy away is the mistakes. For each pair of submissions and each question this computes the
shared-error overlap: of the images (Q2: pixels) that either gets wrong, the fraction both get wrong with
the same wrong class. Measured on Q1 (docs/benchmarks.md): FashionNets trained apart with the same recipe
share 0.67 of their mistakes, a copy with its weights nudged 0.94; a copy trained 200 steps further shares
only 0.61 with its source, so further training hides a copy from this check, and only byte-identical files
or near-exact copies stand out. The report lists every pair above the threshold, and the distribution over
all pairs so that an instructor can see where the bulk lies, for a check by hand.
"""
from __future__ import annotations

import hashlib
import itertools
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grader.text import markdown_code
from grader.upload import UploadLimits, open_regular, walk

WEIGHT_MIN_BYTES = 4096  # smaller files (code, configs) are too often shared starter material
Q2_PIXEL_SAMPLE = 200_000  # pixels compared per pair for Q2, the same fixed random ones for every pair


@dataclass(frozen=True)
class SimilarPair:
    question: str
    a: str
    b: str
    overlap: float  # shared-error overlap, in [0, 1]
    agreement: float  # fraction of images (pixels) with the same prediction


def file_hashes(folder: Path, limits: UploadLimits) -> list[tuple[str, int, str]]:
    """(sha256, size, path relative to `folder`) of its regular files of at least WEIGHT_MIN_BYTES, as far as
    the upload caps go (past them the upload was refused: a sparse file of terabytes is not read). Only a
    regular file is ever opened (a device node's open can act on the device); links are skipped."""
    found = []
    budget = limits.max_bytes
    for top, _, names in walk(folder):
        for name in names:
            path = top / name
            try:
                size = os.lstat(path).st_size
            except OSError:
                continue
            if not limits.within(size, budget):
                continue
            budget -= size
            try:
                opened = open_regular(path)
            except OSError:
                continue
            if opened is None:
                continue
            fd, st = opened
            with os.fdopen(fd, "rb") as f:
                size = st.st_size
                if size < WEIGHT_MIN_BYTES:
                    continue
                digest = hashlib.sha256()
                for chunk in iter(lambda: f.read(2**20), b""):
                    digest.update(chunk)
            found.append((digest.hexdigest(), size, str(path.relative_to(folder))))
    return found


def identical_files(hashes: dict[str, list[tuple[str, int, str]]]) -> list[tuple[str, int, list[tuple[str, str]]]]:
    """(sha256, size, [(submission, file)]) of every file found, byte for byte, in more than one submission."""
    seen: dict[tuple[str, int], list[tuple[str, str]]] = defaultdict(list)
    for name, files in hashes.items():
        for sha, size, where in files:
            seen[(sha, size)].append((name, where))
    return [(sha, size, where) for (sha, size), where in sorted(seen.items())
            if len({name for name, _ in where}) > 1]


def similar_predictions(question: str, predictions: dict[str, np.ndarray], labels: np.ndarray,
                        seed: int = 0) -> list[SimilarPair]:
    """The shared-error overlap and agreement of every pair of submissions with predictions of the same shape."""
    truth = labels.reshape(-1)
    pick = None
    if question == "q2" and truth.size > Q2_PIXEL_SAMPLE:
        pick = np.sort(np.random.default_rng(seed).choice(truth.size, Q2_PIXEL_SAMPLE, replace=False))
        truth = truth[pick]
    flat = {}
    for name, p in predictions.items():
        if p.size == labels.size:
            flat[name] = p.reshape(-1)[pick] if pick is not None else p.reshape(-1)
    pairs = []
    for a, b in itertools.combinations(sorted(flat), 2):
        pa, pb = flat[a], flat[b]
        wrong_a, wrong_b = pa != truth, pb != truth
        either = np.count_nonzero(wrong_a | wrong_b)
        shared = np.count_nonzero(wrong_a & (pa == pb))
        overlap = shared / either if either else 1.0
        pairs.append(SimilarPair(question, a, b, float(overlap), float(np.mean(pa == pb))))
    return pairs


def report(files: list[tuple[str, int, list[tuple[str, str]]]], pairs: list[SimilarPair], threshold: float,
           submitters: dict[str, list[str]]) -> str:
    """duplicates.md: the identical files, the pairs at or above `threshold`, and the distribution."""
    def who(name: str) -> str:
        return f"{markdown_code(name)} ({markdown_code('; '.join(submitters.get(name, [])) or 'unknown')})"

    lines = ["# Possible copies", "", "Leads for a check by hand, not verdicts: starter weights handed out to "
             "everyone, or a team's two submissions, look the same.", "", "## Identical files", ""]
    if not files:
        lines.append(f"None (files of {WEIGHT_MIN_BYTES} bytes or more compared byte for byte).")
    for sha, size, where in files:
        lines.append(f"- {size:,} bytes, sha256 {sha[:16]}: " + ", ".join(f"{who(n)}: {markdown_code(f)}" for n, f in where))
    lines += ["", f"## Predictions that share their mistakes (overlap >= {threshold:g})", ""]
    flagged = sorted((p for p in pairs if p.overlap >= threshold), key=lambda p: -p.overlap)
    if not flagged:
        lines.append("None.")
    for p in flagged:
        lines.append(f"- {p.question.upper()}: {who(p.a)} and {who(p.b)}: {100 * p.overlap:.1f} % of their "
                     f"errors shared, {100 * p.agreement:.1f} % of predictions equal")
    lines += ["", "## All pairs", ""]
    for question in sorted({p.question for p in pairs}):
        values = np.array([p.overlap for p in pairs if p.question == question])
        lines.append(f"- {question.upper()}: {len(values)} pairs; shared-error overlap median {np.median(values):.3f}, "
                     f"99th percentile {np.percentile(values, 99):.3f}, max {values.max():.3f}")
    return "\n".join(lines) + "\n"


def draw(pairs: list[SimilarPair], threshold: float, path: Path) -> Path:
    """A histogram per question of the pairs' shared-error overlap, with the threshold marked."""
    from grader.plots import pyplot

    plt = pyplot()
    questions = sorted({p.question for p in pairs}) or ["q1"]
    fig, axes = plt.subplots(1, len(questions), figsize=(4.5 * len(questions), 3.2), squeeze=False)
    for ax, question in zip(axes[0], questions):
        ax.hist([p.overlap for p in pairs if p.question == question], bins=50, range=(0, 1), color="tab:purple")
        ax.axvline(threshold, color="tab:red", linestyle="--", label=f"flagged at {threshold:g}")
        ax.set_yscale("log")
        ax.set_title(f"{question.upper()}: pairs of submissions", fontsize=10)
        ax.set_xlabel("shared-error overlap")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
