"""The cost of the 95 % intervals, in one run: the bootstrap over images (1,000 resamples) for Q2 against the
number of images, and the exact binomial interval for Q1, beside the metrics' own per-image statistics.

    PYTHONPATH=. .venv/bin/python bench/uncertainty.py [--images 100 1000 10000] [--resamples 1000]

Per-image statistics are drawn at random in the shape of Q2's (224 x 224 pixels, 6 classes: a confusion
matrix and two 256-level histograms per class); the bootstrap's cost does not depend on their values.
Memory is tracemalloc's peak of numpy allocations during the call, besides the statistics themselves.
"""
from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from grader.uncertainty import binomial_interval, bootstrap_intervals

CLASSES, PIXELS, LEVELS = 6, 224 * 224, 256


def statistics(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cms = rng.multinomial(PIXELS, np.full(CLASSES * CLASSES, 1 / CLASSES**2), size=n).reshape(n, CLASSES, CLASSES)
    totals = rng.multinomial(PIXELS, np.full(LEVELS, 1 / LEVELS), size=(n, CLASSES))
    positives = rng.binomial(totals, 1 / CLASSES)
    return cms.astype(np.int32), positives.astype(np.int32), totals.astype(np.int32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'images':>8} {'stats MiB':>10} {'bootstrap s':>12} {'peak MiB':>9}")
    for n in args.images:
        stats = statistics(rng, n)
        size = sum(s.nbytes for s in stats) / 2**20
        tracemalloc.start()
        started = time.perf_counter()
        bootstrap_intervals(*stats, resamples=args.resamples)
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        print(f"{n:>8} {size:>10.1f} {seconds:>12.2f} {peak:>9.1f}")
    started = time.perf_counter()
    low, high = binomial_interval(9330, 10000)
    print(f"binomial interval of 9,330 / 10,000: {low:.4f} to {high:.4f} in {time.perf_counter() - started:.3f} s")


if __name__ == "__main__":
    main()
