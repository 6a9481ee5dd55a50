"""How far a metric measured on a finite test set is from the model's true one: 95 % intervals over the test
images, so that a score a hair under a threshold can be told apart from a model that is worse.

- Q1 accuracy is a count of correct images out of n: the exact binomial (Clopper-Pearson) interval, the
  textbook one: the p at which seeing k or more (k or fewer) correct has probability 2.5 %.
- Q2's mAP and mIoU pool pixels over images, so pixels are not independent draws; the images are. A
  bootstrap over images: resample the images with replacement, recompute the metric from the resampled
  images' summed counts (each image's confusion matrix and score histograms: its sufficient statistics,
  a few thousand integers however many pixels it has), and take the 2.5 % and 97.5 % quantiles. Seeded:
  the same interval on every run.
Pure functions; the evaluation collects the per-image counts while it streams.
"""
from __future__ import annotations

import math

import numpy as np

LEVEL = 0.95
RESAMPLES = 1000
SEED = 0


def binomial_interval(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Clopper-Pearson interval for k successes in n trials: lower is the p with P(X >= k) = (1 - level)/2
    (0 when k = 0), upper the p with P(X <= k) = (1 - level)/2 (1 when k = n). Each tail is summed exactly
    in log space over all its terms; the p is found by bisection to within 1e-15."""
    if n <= 0:
        return math.nan, math.nan
    alpha = (1 - level) / 2
    i = np.arange(n + 1)
    log_choose = np.concatenate(([0.0], np.cumsum(np.log(n - i[:-1]) - np.log(i[1:]))))  # log C(n, i)

    def tail(p: float, upper: bool) -> float:
        logs = log_choose + i * math.log(p) + (n - i) * math.log1p(-p)  # log P(X = i)
        terms = logs[k:] if upper else logs[: k + 1]
        top = terms.max()
        return float(math.exp(top) * np.exp(terms - top).sum())

    def solve(upper: bool) -> float:
        low, high = 0.0, 1.0
        for _ in range(55):
            mid = (low + high) / 2
            # P(X >= k) grows with p; P(X <= k) falls with p.
            if (tail(mid, upper) < alpha) == upper:
                low = mid
            else:
                high = mid
        return (low + high) / 2

    return (0.0 if k == 0 else solve(True)), (1.0 if k == n else solve(False))


def _nanmean_rows(values: np.ndarray) -> np.ndarray:
    """Mean over the defined (non-NaN) entries of each row; NaN for a row with none."""
    defined = ~np.isnan(values)
    counts = defined.sum(axis=1)
    sums = np.where(defined, values, 0.0).sum(axis=1)
    return np.divide(sums, counts, out=np.full(len(values), np.nan), where=counts > 0)


def iou_rows(cms: np.ndarray) -> np.ndarray:
    """metrics.iou of each of (B, C, C) confusion matrices at once: (B, C)."""
    diagonal = cms[:, np.arange(cms.shape[1]), np.arange(cms.shape[1])].astype(np.float64)
    union = cms.sum(axis=1) + cms.sum(axis=2) - diagonal
    return np.divide(diagonal, union, out=np.full(diagonal.shape, np.nan), where=union > 0)


def ap_rows(positives: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """metrics.ap_from_histogram of each of (B, levels) histogram pairs at once: (B,). Score levels no pixel
    has repeat the operating point before them (or sit at recall 0), which adds no recall step: the VOC sum
    over every level equals the one over the levels seen."""
    num_pos = positives.sum(axis=1).astype(np.float64)
    tp = np.cumsum(positives[:, ::-1], axis=1, dtype=np.float64)
    predicted = np.cumsum(totals[:, ::-1], axis=1, dtype=np.float64)
    recall = np.divide(tp, num_pos[:, None], out=np.zeros_like(tp), where=num_pos[:, None] > 0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    rows = len(tp)
    mrec = np.concatenate((np.zeros((rows, 1)), recall, np.ones((rows, 1))), axis=1)
    mpre = np.concatenate((np.zeros((rows, 1)), precision, np.zeros((rows, 1))), axis=1)
    mpre = np.maximum.accumulate(mpre[:, ::-1], axis=1)[:, ::-1]
    ap = np.sum(np.diff(mrec, axis=1) * mpre[:, 1:], axis=1)
    return np.where(num_pos > 0, ap, np.nan)


def bootstrap_intervals(cms: np.ndarray, positives: np.ndarray, totals: np.ndarray, level: float = LEVEL,
                        resamples: int = RESAMPLES, seed: int = SEED) -> dict[str, tuple[float, float]]:
    """95 % bootstrap intervals of mIoU and mAP over images, from each image's confusion matrix (N, C, C) and
    score histograms (N, C, levels): each resample sums the counts of N images drawn with replacement."""
    n = len(cms)
    if n == 0:
        return {"mIoU": (math.nan, math.nan), "mAP": (math.nan, math.nan)}
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)  # (B, N) times each image is drawn
    classes = cms.shape[1]
    low, high = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    miou = np.empty(resamples)
    amap = np.empty(resamples)
    for b0 in range(0, resamples, 100):  # 100 resamples at a time: memory stays flat in the resamples
        chunk = counts[b0 : b0 + 100]
        cm = np.rint(chunk @ cms.reshape(n, -1)).astype(np.int64).reshape(-1, classes, classes)
        pos = np.rint(chunk @ positives.reshape(n, -1)).astype(np.int64).reshape(len(chunk), classes, -1)
        tot = np.rint(chunk @ totals.reshape(n, -1)).astype(np.int64).reshape(len(chunk), classes, -1)
        miou[b0 : b0 + len(chunk)] = _nanmean_rows(iou_rows(cm))
        amap[b0 : b0 + len(chunk)] = _nanmean_rows(ap_rows(pos.reshape(-1, pos.shape[-1]), tot.reshape(-1, tot.shape[-1]))
                                                   .reshape(len(chunk), classes))
    return {name: (float(np.nanpercentile(v, low)), float(np.nanpercentile(v, high))) for name, v in
            (("mIoU", miou), ("mAP", amap))}
