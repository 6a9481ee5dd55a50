"""Independent, deliberately plain implementations that the tests compare the grader against."""
from __future__ import annotations

import numpy as np


def sort_based_ap(is_positive: np.ndarray, scores: np.ndarray) -> float:
    """Plain reference: sort by score, one operating point per distinct score, VOC interpolation."""
    y = is_positive.ravel().astype(bool)
    s = scores.ravel().astype(np.float64)
    if not y.any():
        return float("nan")
    order = np.argsort(-s, kind="stable")
    y, s = y[order], s[order]
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(y)[last_of_tie]
    predicted = (np.arange(len(s)) + 1)[last_of_tie]
    recall, precision = tp / y.sum(), tp / predicted
    # VOC: monotone precision from the right, summed over recall steps, with (0,0) and (1,0) sentinels.
    mrec = [0.0, *recall, 1.0]
    mpre = [0.0, *precision, 0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])
