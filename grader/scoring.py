"""Scoring policy: metrics -> points, from the question's config alone (pure functions)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from fractions import Fraction

from grader.config import QuestionConfig
from grader.uncertainty import binomial_interval


@dataclass(frozen=True)
class Score:
    points: float
    max_points: float
    full_credit: bool
    reason: str


def _exact(x: float) -> Fraction:
    """A number as the decimal it prints as (0.11 is 11/100, not the binary float nearest to it), so that
    points that come out whole on paper (30 x 0.11 / 0.55 = 6) are whole here too."""
    return Fraction(str(x))


def _round(value: Fraction, step: Fraction, mode: str) -> Fraction:
    if step <= 0:
        return value
    units = value / step
    whole = {"nearest": math.floor(units + Fraction(1, 2)), "down": math.floor(units), "up": math.ceil(units)}[mode]
    return whole * step


def scored_metrics(cfg: QuestionConfig, metrics: dict | None) -> dict | None:
    """The metrics the thresholds apply to: a split question's private part (score_on = "private"), else
    the whole set's. A stored report without the part gives None: it cannot be scored that way."""
    if metrics is None or not (cfg.split and cfg.score_on == "private"):
        return metrics
    return metrics.get("private")


def graced_line(threshold: float, n: int) -> float:
    """A full-credit line lowered by its own sampling error at n images: the lower end of the exact 95 %
    binomial interval of a metric measured at the line (a fraction in [0, 1], whose spread over n images is
    at most the binomial's). The same for every submission graded on n images, so a better metric never
    scores less (scoring at the upper end of each submission's own interval did: an uneven model's is wider)."""
    if not 0 < threshold <= 1:
        return threshold
    return float(binomial_interval(round(threshold * n), n)[0])


def public_part_score(cfg: QuestionConfig, metrics: dict | None) -> Score:
    """What a split question's public part alone would score (shown to students now, never counted);
    `metrics` as for score_question, None when the question could not be graded."""
    return score_question(dataclasses.replace(cfg, score_on="all"), (metrics or {}).get("public"))


def score_question(cfg: QuestionConfig, metrics: dict | None) -> Score:
    """Points for one question from its metrics (the whole set's, with the split's parts when there is
    one); `metrics` is None (or lacks a metric) when the question could not be graded."""
    metrics = scored_metrics(cfg, metrics)
    found = {m: (metrics or {}).get(m) for m in cfg.thresholds}
    missing = [m for m, v in found.items() if v is None or not math.isfinite(v)]
    if missing:
        return Score(0.0, cfg.points, False, f"no {', '.join(missing)} could be computed: 0 points")
    values = {m: float(v) for m, v in found.items() if v is not None}
    thresholds, graced = dict(cfg.thresholds), ""
    n = int((metrics or {}).get("n") or 0)
    if cfg.grace == "interval" and n > 0:  # opted into: the benefit of the test set's noise goes to the student
        thresholds = {m: graced_line(t, n) for m, t in thresholds.items()}
        graced = (f" (the configured {', '.join(f'{t:g}' for t in cfg.thresholds.values())} lowered to the lower end of "
                  f"its own 95 % interval at {n} images: grace)")
    line = ", ".join(f"{m} >= {t:.4g}" for m, t in thresholds.items()) + graced
    if all(values[m] >= t for m, t in thresholds.items()):
        return Score(cfg.points, cfg.points, True, f"full credit ({line})")
    if cfg.partial_credit == "none":
        return Score(0.0, cfg.points, False, f"below the full-credit line ({line}): no partial credit")
    ratios = [min(_exact(values[m]) / _exact(t), Fraction(1)) for m, t in thresholds.items()]
    ratio = min(ratios) if cfg.combine == "min" else sum(ratios, Fraction(0)) / len(ratios)
    exact = _round(_exact(cfg.points) * ratio, _exact(cfg.round_to), cfg.rounding)
    points = float(min(max(exact, Fraction(0)), _exact(cfg.points)))
    return Score(points, cfg.points, False, f"partial credit: {cfg.points:g} x {float(ratio):.4f} of the full-credit "
                                            f"line ({line}), rounded {cfg.rounding} to {cfg.round_to:g}")
