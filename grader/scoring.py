"""Scoring policy: metrics -> points, from the question's config alone (pure functions)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from grader.config import QuestionConfig


@dataclass(frozen=True)
class Score:
    points: float
    max_points: float
    full_credit: bool
    reason: str


def _round(value: float, step: float, mode: str) -> float:
    if step <= 0:
        return value
    units = value / step
    units = {"nearest": math.floor(units + 0.5), "down": math.floor(units), "up": math.ceil(units)}[mode]
    return units * step


def score_question(cfg: QuestionConfig, metrics: dict | None) -> Score:
    """Points for one question; `metrics` is None (or lacks a metric) when the question could not be graded."""
    values = {m: (metrics or {}).get(m) for m in cfg.thresholds}
    missing = [m for m, v in values.items() if v is None or not math.isfinite(v)]
    if missing:
        return Score(0.0, cfg.points, False, f"no {', '.join(missing)} could be computed: 0 points")
    line = ", ".join(f"{m} >= {t:g}" for m, t in cfg.thresholds.items())
    if all(values[m] >= t for m, t in cfg.thresholds.items()):
        return Score(cfg.points, cfg.points, True, f"full credit ({line})")
    if cfg.partial_credit == "none":
        return Score(0.0, cfg.points, False, f"below the full-credit line ({line}): no partial credit")
    ratios = [min(values[m] / t, 1.0) for m, t in cfg.thresholds.items()]
    ratio = min(ratios) if cfg.combine == "min" else sum(ratios) / len(ratios)
    points = min(max(_round(cfg.points * ratio, cfg.round_to, cfg.rounding), 0.0), cfg.points)
    return Score(points, cfg.points, False, f"partial credit: {cfg.points:g} x {ratio:.4f} of the full-credit line "
                                            f"({line}), rounded {cfg.rounding} to {cfg.round_to:g}")
