"""Q2 metrics, side by side in one run: the grader's streaming histograms against a plain sort-based VOC AP
(the course's method, with tied scores grouped as one operating point) and scikit-learn.

    PYTHONPATH=. .venv/bin/python bench/metrics.py [--images 100] [--stream 1000 10000] [--batch 10] [--repeat 3] [--plot FILE]

Inputs are random (seeded): logits (N, 6, 224, 224) with labels that the logits predict better than
chance, so AP and IoU are neither 0 nor 1; the streamed runs cycle over those N images. Times are the
best of --repeat runs; memory is tracemalloc's peak of numpy allocations above the inputs. Ratios are
what count on these shared machines.
"""
from __future__ import annotations

import argparse
import time
import tracemalloc
from pathlib import Path
from typing import Callable

import numpy as np

from grader.metrics import SegmentationAccumulator, quantize, quantized_softmax, softmax

CLASSES, SIZE = 6, 224


def batch(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, CLASSES, size=(n, SIZE, SIZE), dtype=np.uint8)
    logits = rng.normal(size=(n, CLASSES, SIZE, SIZE)).astype(np.float32)
    np.put_along_axis(logits, labels[:, None].astype(np.intp), 1.5, axis=1)  # the true class scores higher
    logits += rng.normal(scale=1.0, size=logits.shape).astype(np.float32)
    return logits, labels


def grader_path(logits: np.ndarray, labels: np.ndarray, acc: SegmentationAccumulator | None = None) -> dict:
    """What grader/evaluation.py does per batch: softmax and 8-bit quantisation per image, then update."""
    acc = acc or SegmentationAccumulator(CLASSES)
    acc.update(quantized_softmax(logits), labels)
    return acc.compute()


def sort_based_ap(is_positive: np.ndarray, scores: np.ndarray) -> float:
    """Plain VOC AP: sort, cumulative sums, one operating point per distinct score, monotone precision."""
    order = np.argsort(-scores.astype(np.float64), kind="stable")
    y, s = is_positive[order], scores[order]
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(y)[last_of_tie]
    predicted = (np.arange(len(s)) + 1)[last_of_tie]
    rec, prec = tp / y.sum(), tp / predicted
    mrec, mpre = np.r_[0.0, rec, 1.0], np.r_[0.0, prec, 0.0]
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[steps] - mrec[steps - 1]) * mpre[steps]))


def sort_based_aps(quantized: np.ndarray, labels: np.ndarray) -> np.ndarray:
    flat = labels.ravel()
    return np.array([sort_based_ap(flat == c, quantized[:, c].ravel()) for c in range(CLASSES)])


def sklearn_aps(quantized: np.ndarray, labels: np.ndarray) -> np.ndarray:
    from sklearn.metrics import average_precision_score

    flat = labels.ravel()
    return np.array([average_precision_score(flat == c, quantized[:, c].ravel()) for c in range(CLASSES)])


def plain_quantized(logits: np.ndarray) -> np.ndarray:
    """The plain softmax and quantisation of the whole batch at once, as a course script would do it."""
    return quantize(softmax(logits, axis=1))


def best_time(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - started)
    return best, out


def peak_mib(fn: Callable[[], object]) -> float:
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def stream(logits: np.ndarray, labels: np.ndarray, n: int, batch_size: int) -> tuple[float, float, dict]:
    """Grade n images in batches, cycling over the given ones (generating billions of random logits would
    cost more than the metrics): (seconds in softmax, quantisation and update, peak MiB above the inputs)."""
    acc = SegmentationAccumulator(CLASSES)
    seconds = 0.0
    tracemalloc.start()
    for start in range(0, n, batch_size):
        i = start % len(logits)
        count = min(batch_size, n - start, len(logits) - i)
        started = time.perf_counter()
        acc.update(quantized_softmax(logits[i : i + count]),
                   labels[i : i + count])
        seconds += time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, peak / 2**20, acc.compute()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--stream", type=int, nargs="*", default=[100, 1000, 10000])
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", type=Path, help="PNG of time and peak memory against the number of images")
    args = p.parse_args()

    logits, labels = batch(np.random.default_rng(args.seed), args.images)
    print(f"{args.images} images x {CLASSES} classes x {SIZE} x {SIZE} (random, seed {args.seed})")
    t_grader, state = best_time(lambda: grader_path(logits, labels), args.repeat)
    quantized = quantized_softmax(logits)
    t_update, _ = best_time(lambda: SegmentationAccumulator(CLASSES).update(quantized, labels), args.repeat)
    t_plain_q, plain = best_time(lambda: plain_quantized(logits), 1)
    t_sort, sort_ap = best_time(lambda: sort_based_aps(plain, labels), 1)
    t_sk, sk_ap = best_time(lambda: sklearn_aps(plain, labels), 1)
    gap = float(np.max(np.abs(state["AP"] - sort_ap)))
    print(f"{'':<46}{'seconds':>9}{'ratio':>9}{'peak MiB':>10}")
    rows = [("grader: softmax + quantisation + metrics", t_grader, t_grader, lambda: grader_path(logits, labels)),
            ("plain: softmax + quantisation + sort-based AP", t_plain_q + t_sort, t_grader,
             lambda: sort_based_aps(plain_quantized(logits), labels)),
            ("grader metrics (update) on quantised scores", t_update, t_update,
             lambda: SegmentationAccumulator(CLASSES).update(quantized, labels)),
            ("sort-based VOC AP (ties grouped), AP only", t_sort, t_update, lambda: sort_based_aps(quantized, labels)),
            ("scikit-learn average_precision_score", t_sk, t_update, lambda: sklearn_aps(quantized, labels))]
    for name, seconds, base, fn in rows:
        print(f"{name:<46}{seconds:>9.3f}{seconds / base:>8.1f}x{peak_mib(fn):>10.0f}")
    print(f"max |AP grader - AP sort-based| = {gap:.2e} (must be <= 1e-9); "
          f"sklearn's (step-wise, not VOC-interpolated) differs by {np.max(np.abs(sk_ap - sort_ap)):.2e}")
    if gap > 1e-9 or not np.array_equal(plain, quantized):
        raise SystemExit("the grader's numbers disagree with the plain path")

    points = []
    for n in args.stream:
        seconds, peak, streamed = stream(logits, labels, n, args.batch)
        points.append((n, seconds, peak))
        print(f"streamed {n:>6} images in batches of {args.batch}: {seconds:7.2f} s in the metrics "
              f"({seconds / n * 1000:.1f} ms/image), peak {peak:.0f} MiB above the batch, mAP {streamed['mAP']:.4f}")
    if args.plot and points:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
        ns = [n for n, _, _ in points]
        a.plot(ns, [s for _, s, _ in points], "o-")
        a.set(xscale="log", yscale="log", xlabel="images", ylabel="seconds in the metrics", title="time")
        b.plot(ns, [m for _, _, m in points], "o-")
        b.set(xscale="log", xlabel="images", ylabel="peak MiB (tracemalloc)", title="memory", ylim=(0, None))
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"picture: {args.plot}")


if __name__ == "__main__":
    main()
