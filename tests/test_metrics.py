"""Metrics against independent implementations: scikit-learn and a plain sort-based AP."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import precision_recall_curve

from grader import metrics as M
from reference_metrics import sort_based_ap


def sklearn_ap(is_positive: np.ndarray, scores: np.ndarray) -> float:
    """scikit-learn's PR curve (ties form one threshold) with VOC interpolation on top."""
    precision, recall, _ = precision_recall_curve(is_positive.ravel(), scores.ravel(), drop_intermediate=False)
    # sklearn lists thresholds ascending and appends (precision 1, recall 0): drop it, go descending.
    return M.voc_ap(recall[:-1][::-1], precision[:-1][::-1])


def random_case(rng: np.random.Generator, n: int, c: int, h: int = 5, w: int = 7, levels: int = 256):
    target = rng.integers(0, c, size=(n, h, w))
    logits = rng.normal(size=(n, c, h, w)) * rng.uniform(0.1, 4)
    scores = M.quantize(M.softmax(logits))
    if levels < 256:  # coarse scores: many ties
        scores = (scores // (256 // levels) * (256 // levels)).astype(np.uint8)
    return target, scores


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("levels", [256, 4])
def test_ap_matches_sort_based_and_sklearn(seed: int, levels: int) -> None:
    rng = np.random.default_rng(seed)
    target, scores = random_case(rng, n=int(rng.integers(1, 4)), c=4, levels=levels)
    for c in range(4):
        pos = target == c
        ours = M.average_precision(pos, scores[:, c])
        if not pos.any():
            assert np.isnan(ours)
            continue
        assert ours == pytest.approx(sort_based_ap(pos, scores[:, c]), abs=1e-12)
        assert ours == pytest.approx(sklearn_ap(pos, scores[:, c]), abs=1e-12)


def test_ap_edge_cases() -> None:
    # Constant scores: one operating point, precision = prevalence over all recall.
    pos = np.array([1, 0, 0, 1, 0], bool)
    assert M.average_precision(pos, np.full(5, 7, np.uint8)) == pytest.approx(0.4)
    # Perfect ranking gives 1; perfectly inverted gives the VOC value from the reference.
    scores = np.array([200, 10, 20, 250, 30], np.uint8)
    assert M.average_precision(pos, scores) == pytest.approx(1.0)
    inverted = np.array([10, 200, 250, 20, 100], np.uint8)
    assert M.average_precision(pos, inverted) == pytest.approx(sort_based_ap(pos, inverted))
    # No positives: undefined.
    assert np.isnan(M.average_precision(np.zeros(5, bool), scores))
    # A single pixel that is positive.
    assert M.average_precision(np.array([True]), np.array([3], np.uint8)) == pytest.approx(1.0)


def test_quantize_is_floor_255p() -> None:
    p = np.array([0.0, 1 / 255 - 1e-12, 1 / 255 + 1e-12, 0.5, 0.999999, 1.0])
    assert M.quantize(p).tolist() == [0, 0, 1, 127, 254, 255]


@pytest.mark.parametrize("seed", range(5))
def test_confusion_iou_accuracy_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    c = 5
    target = rng.integers(0, c - 1, size=300)  # class 4 never in the ground truth
    pred = np.where(rng.random(300) < 0.6, target, rng.integers(0, c, size=300))
    pred[pred == 3] = 2  # class 3 never predicted
    cm = M.confusion_matrix(target, pred, c)
    present = np.union1d(target, pred)
    sk = sk_confusion_matrix(target, pred)  # sklearn keeps only classes present in either
    assert np.array_equal(cm[np.ix_(present, present)], sk)
    assert M.accuracy(cm) == pytest.approx((target == pred).mean())
    for k in range(c):
        support = (target == k).sum()
        expected = (pred[target == k] == k).mean() if support else np.nan
        np.testing.assert_allclose(M.per_class_accuracy(cm)[k], expected)
    # IoU from the course's formula on sklearn's matrix, over the present classes only.
    inter = np.diag(sk)
    union = sk.sum(0) + sk.sum(1) - inter
    np.testing.assert_allclose(M.iou(cm)[present], inter / union)
    absent = np.setdiff1d(np.arange(c), present)
    assert np.isnan(M.iou(cm)[absent]).all()


def test_iou_class_absent_everywhere_is_nan_and_left_out_of_mean() -> None:
    acc = M.SegmentationAccumulator(3)
    target = np.zeros((1, 2, 2), np.uint8)
    target[0, 0, 0] = 1
    scores = np.zeros((1, 3, 2, 2), np.uint8)
    scores[0, 0] = 200
    scores[0, 0, 0, 0] = 0
    scores[0, 1, 0, 0] = 250
    acc.update(scores, target)
    result = acc.compute()
    assert np.isnan(result["IoU"][2]) and np.isnan(result["AP"][2])
    assert result["mIoU"] == pytest.approx(1.0)
    assert result["mAP"] == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(4))
def test_streaming_equals_one_shot_and_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    c = 6
    target, scores = random_case(rng, n=7, c=c, h=6, w=4, levels=[256, 8][seed % 2])
    target[target == 2] = 0  # class 2 absent from the ground truth: AP undefined
    one_shot = M.SegmentationAccumulator(c)
    one_shot.update(scores, target)
    batched = M.SegmentationAccumulator(c)
    for i in range(0, 7, 3):
        batched.update(scores[i : i + 3], target[i : i + 3])
    a, b = one_shot.compute(), batched.compute()
    np.testing.assert_array_equal(a["confusion_matrix"], b["confusion_matrix"])
    np.testing.assert_array_equal(a["AP"], b["AP"])
    expected_ap = np.array([sort_based_ap(target == k, scores[:, k]) for k in range(c)])
    np.testing.assert_allclose(a["AP"], expected_ap, atol=1e-12)
    assert np.isnan(a["AP"][2])
    assert a["mAP"] == pytest.approx(np.nanmean(expected_ap))
    # IoU from argmax of the quantized scores, via sklearn's matrix.
    pred = np.argmax(scores, axis=1)
    sk = sk_confusion_matrix(target.ravel(), pred.ravel())
    inter = np.diag(sk)
    assert a["mIoU"] == pytest.approx(np.mean(inter / (sk.sum(0) + sk.sum(1) - inter)))


def test_classification_accumulator_streams() -> None:
    rng = np.random.default_rng(0)
    scores, target = rng.normal(size=(101, 10)), rng.integers(0, 10, 101)
    acc = M.ClassificationAccumulator(10)
    for i in range(0, 101, 25):
        acc.update(scores[i : i + 25], target[i : i + 25])
    result = acc.compute()
    assert result["n"] == 101
    assert result["accuracy"] == pytest.approx((scores.argmax(1) == target).mean())


def test_bad_inputs_are_refused_with_a_message() -> None:
    with pytest.raises(ValueError, match="outside 0..2"):
        M.confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="uint8 scores"):
        M.SegmentationAccumulator(3).update(np.zeros((1, 3, 2, 2), np.float32), np.zeros((1, 2, 2), np.uint8))


@pytest.mark.parametrize("seed", range(4))
def test_fast_paths_equal_the_plain_ones(seed: int) -> None:
    """The grader's fused softmax + quantisation and packed argmax give exactly the plain numpy results."""
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(5, 6, 9, 11)) * [0.01, 1, 30][seed % 3]).astype(np.float32)
    logits[0, :, 0, 0] = [1e4, -1e4, 0, 0, 0, 0]  # saturated: p = 1 and 0
    assert np.array_equal(M.quantized_softmax(logits), M.quantize(M.softmax(logits, axis=1)))
    scores = rng.integers(0, 4, size=(5, 6, 9, 11)).astype(np.uint8)  # many ties: the first class wins
    assert np.array_equal(M.first_argmax(scores), np.argmax(scores, axis=1))
