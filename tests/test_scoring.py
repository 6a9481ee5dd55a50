"""Scoring policy: the course's numbers and the config's rules."""
from __future__ import annotations

import dataclasses

import pytest

from grader.config import load_config
from grader.scoring import score_question

CONFIG = load_config()
Q1, Q2 = CONFIG.questions["q1"], CONFIG.questions["q2"]


def test_course_defaults() -> None:
    assert (Q1.points, dict(Q1.thresholds)) == (20, {"accuracy": 0.90})
    assert (Q2.points, dict(Q2.thresholds)) == (30, {"mIoU": 0.55})
    assert CONFIG.max_score == 50


@pytest.mark.parametrize(("miou", "points"), [(0.53, 29), (0.55, 30), (0.70, 30), (0.35, 19), (0.0, 0), (0.275, 15)])
def test_q2_partial_credit_is_proportional_and_rounded(miou: float, points: int) -> None:
    score = score_question(Q2, {"mIoU": miou, "mAP": 0.7})
    assert score.points == points
    assert score.max_points == 30
    assert score.full_credit == (miou >= 0.55)


def test_the_seed_reports_29_of_30() -> None:
    # The seed report's autograder result: mIoU 0.53 on the secret test -> 29/30.
    assert score_question(Q2, {"mIoU": 0.53}).points == 29


def test_q1_line() -> None:
    assert score_question(Q1, {"accuracy": 0.90}).points == 20
    assert score_question(Q1, {"accuracy": 0.8999}).points == 20  # 19.998 rounds to the nearest point
    assert score_question(Q1, {"accuracy": 0.635}).points == 14  # the seed's BaseNet: 20 * 0.635 / 0.9 = 14.1


def test_missing_or_nan_metric_scores_zero() -> None:
    assert score_question(Q2, None).points == 0
    assert score_question(Q2, {"mIoU": float("nan")}).points == 0
    assert "no mIoU" in score_question(Q2, {}).reason


def test_rules() -> None:
    both = dataclasses.replace(Q2, thresholds={"mIoU": 0.5, "mAP": 0.8})
    assert score_question(both, {"mIoU": 0.5, "mAP": 0.8}).full_credit
    assert score_question(both, {"mIoU": 0.5, "mAP": 0.4}).points == 15  # min ratio 0.5
    mean = dataclasses.replace(both, combine="mean")
    assert score_question(mean, {"mIoU": 0.5, "mAP": 0.4}).points == 23  # (1 + 0.5) / 2 * 30 = 22.5, half up
    assert score_question(dataclasses.replace(Q2, partial_credit="none"), {"mIoU": 0.54}).points == 0
    assert score_question(dataclasses.replace(Q2, rounding="down"), {"mIoU": 0.545}).points == 29
    assert score_question(dataclasses.replace(Q2, rounding="up"), {"mIoU": 0.531}).points == 29
    assert score_question(dataclasses.replace(Q2, round_to=0.5), {"mIoU": 0.53}).points == 29.0
    assert score_question(dataclasses.replace(Q2, round_to=0), {"mIoU": 0.44}).points == pytest.approx(24.0)
    assert score_question(dataclasses.replace(Q2, round_to=0.5), {"mIoU": 0.54}).points == 29.5


@pytest.mark.parametrize(("mode", "points", "threshold", "metric", "expected"), [
    ("down", 30, 0.55, 0.11, 6),  # 30 x 0.11 / 0.55 is exactly 6 on paper (floating point: 5.999...)
    ("up", 10, 0.6, 0.54, 9),  # exactly 9 (floating point: 9.000...02 went up to 10, the full score)
    ("nearest", 10, 0.6, 0.54, 9),
    ("down", 20, 0.9, 0.45, 10),
    ("up", 20, 0.9, 0.45, 10),
    ("nearest", 30, 0.55, 0.275, 15),
])
def test_rounding_is_exact_at_whole_multiples(mode: str, points: float, threshold: float, metric: float,
                                              expected: float) -> None:
    cfg = dataclasses.replace(Q2, points=float(points), thresholds={"mIoU": threshold}, rounding=mode)
    score = score_question(cfg, {"mIoU": metric})
    assert score.points == expected and not score.full_credit


@pytest.mark.parametrize(("round_to", "metric", "expected"), [
    (0.1, 0.53, 28.9), (0.5, 0.53, 29.0), (1.0, 0.53, 29.0), (0.1, 0.11, 6.0), (0.5, 0.1375, 7.5),
])
def test_round_to_steps_give_clean_numbers(round_to: float, metric: float, expected: float) -> None:
    score = score_question(dataclasses.replace(Q2, round_to=round_to), {"mIoU": metric})
    assert score.points == expected and repr(score.points) == repr(expected)


def test_round_to_zero_keeps_the_exact_value() -> None:
    assert score_question(dataclasses.replace(Q2, round_to=0), {"mIoU": 0.11}).points == 6.0
    assert score_question(dataclasses.replace(Q2, round_to=0), {"mIoU": 0.1}).points == pytest.approx(30 * 0.1 / 0.55)
