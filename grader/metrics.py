"""Metrics of both questions: pure numpy functions plus streaming accumulators that reuse them.

Everything reduces to sufficient statistics whose size does not depend on the number of pixels: a
confusion matrix (accuracy, per-class accuracy, IoU) and, for Q2, per-class histograms of the 8-bit
quantized scores (AP), kept per image too for the bootstrap over images (grader/uncertainty.py).
Undefined values (a class with no samples, or absent from both ground truth and predictions) are NaN
here and become null in reports.
"""
from __future__ import annotations

import numpy as np

SCORE_LEVELS = 256  # 8-bit scores, as in the course's upload format


def confusion_matrix(target: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts, rows = ground truth, columns = prediction."""
    target, pred = np.asarray(target).ravel(), np.asarray(pred).ravel()
    if target.shape != pred.shape:
        raise ValueError(f"target has {target.size} elements, prediction {pred.size}")
    for name, values in (("target", target), ("prediction", pred)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} holds class ids outside 0..{num_classes - 1}")
    # 16-bit keys where they fit: a quarter of the memory traffic of int64 on Q2's millions of pixels.
    dtype = np.uint16 if num_classes**2 <= 2**16 and target.dtype.kind in "iu" and pred.dtype.kind in "iu" else np.int64
    keys = target.astype(dtype) * dtype(num_classes) + pred.astype(dtype)
    return np.bincount(keys, minlength=num_classes**2).reshape(num_classes, num_classes)


def accuracy(cm: np.ndarray) -> float:
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float("nan")


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Recall of each class; NaN for a class with no samples."""
    support = cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(support > 0, np.diag(cm) / support, np.nan)


def iou(cm: np.ndarray) -> np.ndarray:
    """TP / (TP + FP + FN) per class; NaN for a class absent from both ground truth and predictions."""
    union = cm.sum(axis=0) + cm.sum(axis=1) - np.diag(cm)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, np.diag(cm) / union, np.nan)


def softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


def quantize(probs: np.ndarray) -> np.ndarray:
    """floor(255 * p) as uint8, the course's upload format."""
    return np.floor(np.clip(probs, 0.0, 1.0) * (SCORE_LEVELS - 1)).astype(np.uint8)


def quantized_softmax(logits: np.ndarray) -> np.ndarray:
    """quantize(softmax(logits, axis=1)) of (N, C, ...) logits, exactly, one image at a time in one float64
    buffer: a tenth of the temporaries (which inside a 768 MB container the student's code needs) and a
    third less time."""
    out = np.empty(logits.shape, np.uint8)
    z = np.empty(logits.shape[1:], np.float64)
    for i, image in enumerate(logits):
        z[...] = image
        z -= z.max(axis=0)
        np.exp(z, out=z)
        z /= z.sum(axis=0)
        np.clip(z, 0.0, 1.0, out=z)
        z *= SCORE_LEVELS - 1
        np.floor(z, out=z)
        out[i] = z
    return out


def first_argmax(scores: np.ndarray) -> np.ndarray:
    """np.argmax(scores, axis=1) of uint8 (N, C, H, W) as uint8 (N, H, W), the first class winning a tie.
    Each score is packed with its class as (score << 8) | (255 - class), so one running maximum over the
    classes finds both, in contiguous 16-bit passes: several times faster than argmax across a strided axis."""
    shape = (scores.shape[0], *scores.shape[2:])
    best, packed = np.zeros(shape, np.uint16), np.empty(shape, np.uint16)
    for c in range(scores.shape[1]):
        packed[...] = scores[:, c]
        packed <<= 8
        packed |= 255 - c
        np.maximum(best, packed, out=best)
    return (255 - (best & 255)).astype(np.uint8)


def image_statistics(target: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each image's sufficient statistics for Q2's metrics: its confusion matrix (N, C, C) and its per-class
    histograms of quantized scores, positives and all (N, C, 256), int64. Pooled metrics sum them over the
    images; a bootstrap over images resamples them (grader/uncertainty.py).

    target: (N, H, W) class ids < C; scores: (N, C, H, W) uint8. One bincount per image and class of the
    joint key (true class, score) gives both histograms: its row of the class is the positives, the sum of
    its rows all. Image by image, the bincount's index array stays in the CPU's cache.
    """
    n, num_classes = scores.shape[:2]
    predicted = first_argmax(scores)
    cms = np.stack([confusion_matrix(t, p, num_classes) for t, p in zip(target, predicted)]) if n else \
        np.zeros((0, num_classes, num_classes), np.int64)
    keys = np.asarray(target).astype(np.uint16 if num_classes <= 256 else np.int64) << 8
    joint = np.zeros((n, num_classes, num_classes * SCORE_LEVELS), np.int64)
    for i, (image_keys, image_scores) in enumerate(zip(keys, scores)):
        for c in range(num_classes):
            joint[i, c] = np.bincount((image_keys | image_scores[c]).ravel(), minlength=num_classes * SCORE_LEVELS)
    joint = joint.reshape(n, num_classes, num_classes, SCORE_LEVELS)  # (image, scored class, true class, score)
    diagonal = np.arange(num_classes)
    return cms, joint[:, diagonal, diagonal], joint.sum(axis=2)


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC interpolated AP: precision made monotone from the right, summed over the steps of recall."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[steps] - mrec[steps - 1]) * mpre[steps]))


def ap_from_histogram(positives: np.ndarray, total: np.ndarray) -> float:
    """AP of one class from its score histograms; tied scores form one operating point.

    NaN when the class has no positives (AP is undefined there).
    """
    num_pos = positives.sum()
    if num_pos == 0:
        return float("nan")
    tp = np.cumsum(positives[::-1])
    predicted = np.cumsum(total[::-1])
    seen = total[::-1] > 0
    return voc_ap(tp[seen] / num_pos, tp[seen] / predicted[seen])


def average_precision(is_positive: np.ndarray, scores: np.ndarray) -> float:
    """AP of one class from boolean ground truth and uint8 scores of the same shape."""
    scores = np.asarray(scores, dtype=np.uint8).ravel()
    total = np.bincount(scores, minlength=SCORE_LEVELS)
    positives = np.bincount(scores[np.asarray(is_positive).ravel().astype(bool)], minlength=SCORE_LEVELS)
    return ap_from_histogram(positives, total)


class ClassificationAccumulator:
    """Streaming Q1 metrics: `update` with (N, C) scores and (N,) labels, `compute` at the end."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        self.cm = np.zeros((self.num_classes, self.num_classes), np.int64)

    def update(self, scores: np.ndarray, target: np.ndarray) -> None:
        self.cm += confusion_matrix(target, np.argmax(scores, axis=1), self.num_classes)

    def merged(self, other: "ClassificationAccumulator") -> "ClassificationAccumulator":
        """The state of both sets of images together (the counts add)."""
        both = ClassificationAccumulator(self.num_classes)
        both.cm = self.cm + other.cm
        return both

    def compute(self) -> dict:
        return {"n": int(self.cm.sum()), "accuracy": accuracy(self.cm),
                "per_class_accuracy": per_class_accuracy(self.cm), "confusion_matrix": self.cm.copy()}


class SegmentationAccumulator:
    """Streaming Q2 metrics over all pixels of all images pooled.

    `update` takes quantized scores (N, C, H, W) uint8 and labels (N, H, W); the predicted label of a
    pixel is the argmax of its quantized scores (the first class wins a tie, as np.argmax does).
    """

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.cm = np.zeros((self.num_classes, self.num_classes), np.int64)
        self.positives = np.zeros((self.num_classes, SCORE_LEVELS), np.int64)
        self.total = np.zeros((self.num_classes, SCORE_LEVELS), np.int64)
        self.images: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # image_statistics() of each batch, int32

    def update(self, scores: np.ndarray, target: np.ndarray) -> None:
        if scores.dtype != np.uint8 or scores.ndim != 4 or scores.shape[1] != self.num_classes:
            raise ValueError(f"expected uint8 scores (N, {self.num_classes}, H, W), got {scores.dtype} {scores.shape}")
        if target.shape != (scores.shape[0], *scores.shape[2:]):
            raise ValueError(f"labels {target.shape} do not match scores {scores.shape}")
        cms, positives, totals = image_statistics(target, scores)
        self.n += len(scores)
        self.cm += cms.sum(axis=0)
        self.positives += positives.sum(axis=0)
        self.total += totals.sum(axis=0)
        self.images.append((cms.astype(np.int32), positives.astype(np.int32), totals.astype(np.int32)))

    def merged(self, other: "SegmentationAccumulator") -> "SegmentationAccumulator":
        """The state of both sets of images together (counts and histograms add: AP and IoU are computed
        from them, so the whole set's metrics come from its parts' states exactly)."""
        both = SegmentationAccumulator(self.num_classes)
        both.n, both.cm = self.n + other.n, self.cm + other.cm
        both.positives, both.total = self.positives + other.positives, self.total + other.total
        both.images = self.images + other.images
        return both

    def compute(self) -> dict:
        aps = np.array([ap_from_histogram(p, t) for p, t in zip(self.positives, self.total)])
        ious = iou(self.cm)
        return {"n": self.n, "AP": aps, "IoU": ious, "mAP": _nanmean(aps), "mIoU": _nanmean(ious),
                "confusion_matrix": self.cm.copy()}

    def per_image(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """image_statistics() of every image so far, in order (for the bootstrap over images)."""
        if not self.images:
            c = self.num_classes
            return (np.zeros((0, c, c), np.int32), np.zeros((0, c, SCORE_LEVELS), np.int32),
                    np.zeros((0, c, SCORE_LEVELS), np.int32))
        cms, positives, totals = zip(*self.images)
        return np.concatenate(cms), np.concatenate(positives), np.concatenate(totals)


def _nanmean(values: np.ndarray) -> float:
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")
