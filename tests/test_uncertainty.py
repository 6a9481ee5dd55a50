"""95 % intervals over the test images: the exact binomial interval against its defining equations and a
published value, the bootstrap over images seeded and shrinking as images are added, per-image
statistics that add up to the pooled ones, and the opt-in grace margin."""
from __future__ import annotations

import dataclasses
from fractions import Fraction
from math import comb

import numpy as np
import pytest

from grader.config import load_config
from grader.metrics import SegmentationAccumulator, image_statistics
from grader.scoring import graced_line, score_question
from grader.uncertainty import binomial_interval, bootstrap_intervals


def _tail(k: int, n: int, p: float, upper: bool) -> float:
    """P(X >= k) or P(X <= k), X ~ Binomial(n, p), in exact rational arithmetic (apart from uncertainty.py)."""
    q = Fraction(p)
    terms = range(k, n + 1) if upper else range(0, k + 1)
    return float(sum(comb(n, i) * q**i * (1 - q) ** (n - i) for i in terms))


@pytest.mark.parametrize("k, n", [(5, 20), (0, 10), (10, 10), (1, 3), (93, 100), (9330, 10000)])
def test_the_binomial_interval_is_clopper_pearsons(k: int, n: int) -> None:
    low, high = binomial_interval(k, n)
    assert 0 <= low <= k / n <= high <= 1
    if k > 0 and n <= 100:  # the defining equations, checked exactly
        assert _tail(k, n, low, upper=True) == pytest.approx(0.025, abs=1e-9)
    if k < n and n <= 100:
        assert _tail(k, n, high, upper=False) == pytest.approx(0.025, abs=1e-9)
    if k == 0:
        assert low == 0 and high == pytest.approx(1 - 0.025 ** (1 / n), abs=1e-10)
    if k == n:
        assert high == 1 and low == pytest.approx(0.025 ** (1 / n), abs=1e-10)
    flipped = binomial_interval(n - k, n)
    assert (low, high) == pytest.approx((1 - flipped[1], 1 - flipped[0]), abs=1e-10)


def test_the_binomial_interval_matches_the_published_one() -> None:
    # 5 successes in 20: 0.0866 to 0.4910 (the exact interval as R's binom.test and the tables give it).
    assert binomial_interval(5, 20) == pytest.approx((0.08657147, 0.49104587), abs=1e-7)
    low, high = binomial_interval(9330, 10000)  # Q1's 93.3 % on 10,000 images: about half a point each way
    assert 0.004 < 0.933 - low < 0.006 and 0.004 < high - 0.933 < 0.006


def _images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 6, (n, 16, 16))
    scores = rng.integers(0, 256, (n, 6, 16, 16)).astype(np.uint8)
    scores[np.arange(n)[:, None, None], target, np.arange(16)[None, :, None], np.arange(16)] //= 2  # imperfect
    scores[:, :, :8] = np.where(np.arange(6)[None, :, None, None] == target[:, None, :8], 255, 0)  # half right
    return target, scores


def test_per_image_statistics_add_up_to_the_pooled_ones() -> None:
    target, scores = _images(7, 0)
    cms, positives, totals = image_statistics(target, scores)
    whole = SegmentationAccumulator(6)
    whole.update(scores, target)
    assert np.array_equal(cms.sum(0), whole.cm) and np.array_equal(positives.sum(0), whole.positives)
    assert np.array_equal(totals.sum(0), whole.total)
    assert totals.sum() == 7 * 6 * 16 * 16


def test_the_bootstrap_is_seeded_covers_the_estimate_and_narrows_with_more_images() -> None:
    target, scores = _images(40, 1)
    accumulator = SegmentationAccumulator(6)
    accumulator.update(scores, target)
    state, stats = accumulator.compute(), accumulator.per_image()
    first = bootstrap_intervals(*stats)
    assert first == bootstrap_intervals(*stats)  # the same on every run
    assert first != bootstrap_intervals(*stats, seed=1)
    for metric in ("mIoU", "mAP"):
        low, high = first[metric]
        assert low < state[metric] < high
    four = bootstrap_intervals(*(np.concatenate([s] * 4) for s in stats))  # the same images, four times as many
    ratio = (four["mIoU"][1] - four["mIoU"][0]) / (first["mIoU"][1] - first["mIoU"][0])
    assert 0.35 < ratio < 0.65  # about 1/sqrt(4)
    same = [np.repeat(s[:1], 10, axis=0) for s in stats]  # identical images: no spread at all
    assert bootstrap_intervals(*same)["mIoU"][0] == bootstrap_intervals(*same)["mIoU"][1]


def test_grace_lowers_the_line_by_its_own_sampling_error_and_the_default_does_not() -> None:
    cfg = load_config().questions["q2"]  # full credit at mIoU >= 0.55
    metrics = {"mIoU": 0.53, "mAP": 0.6, "n": 100, "interval": {"mIoU": [0.49, 0.57], "mAP": [0.55, 0.65]}}
    assert score_question(cfg, metrics).points == 29  # the course's own example: 30 x 0.53 / 0.55
    graced = score_question(dataclasses.replace(cfg, grace="interval"), metrics)
    assert graced.points == 30 and "lower end of its own 95 % interval at 100 images" in graced.reason
    line = graced_line(0.55, 100)  # defined by P(X >= 55) = 2.5 % for X ~ Binomial(100, line), checked apart
    assert abs(sum(comb(100, i) * line**i * (1 - line) ** (100 - i) for i in range(55, 101)) - 0.025) < 1e-9


def test_grace_never_scores_a_better_metric_less() -> None:
    """Scoring at the upper end of each submission's own interval rewarded uneven models: a review's mIoU
    0.45 with a wide interval got 30 / 30, a 0.52 with a narrow one 29 / 30 (#27). The line is now the same
    for every submission graded on as many images, whatever its interval."""
    cfg = dataclasses.replace(load_config().questions["q2"], grace="interval")
    rng = np.random.default_rng(7)
    values = np.linspace(0.2, 0.8, 121)
    points = []
    for v in values:
        width = rng.uniform(0, 0.3)  # each submission's own spread over the images, uneven or not
        points.append(score_question(cfg, {"mIoU": v, "mAP": 0.7, "n": 100,
                                           "interval": {"mIoU": [v - width, v + width]}}).points)
    assert all(b >= a for a, b in zip(points, points[1:])), points
    wide = {"mIoU": 0.45, "mAP": 0.7, "n": 100, "interval": {"mIoU": [0.30, 0.60]}}
    narrow = {"mIoU": 0.52, "mAP": 0.7, "n": 100, "interval": {"mIoU": [0.50, 0.54]}}
    assert score_question(cfg, narrow).points >= score_question(cfg, wide).points


def test_the_batched_ap_and_iou_equal_the_metrics_own() -> None:
    from grader.metrics import ap_from_histogram, iou
    from grader.uncertainty import ap_rows, iou_rows

    rng = np.random.default_rng(3)
    totals = rng.integers(0, 50, (200, 256)) * (rng.random((200, 256)) < 0.3)  # most levels empty, as real scores
    positives = rng.binomial(totals, 0.4)
    positives[:5] = 0  # no positives: AP undefined
    expected = np.array([ap_from_histogram(p, t) for p, t in zip(positives, totals)])
    np.testing.assert_allclose(ap_rows(positives, totals), expected, rtol=1e-12, atol=1e-15)
    cms = rng.integers(0, 30, (50, 6, 6)) * (rng.random((50, 6, 6)) < 0.5)
    np.testing.assert_allclose(iou_rows(cms), np.stack([iou(m) for m in cms]), rtol=1e-12)
