"""Who may see what: one policy for every place the grader writes.

Gradescope names four visibilities (visible, after_due_date, after_published, hidden). An item (a test, its
score, a metric) has one; so has each place the grader writes it to: a test's output has its test's, the
grader's stdout has `stdout_visibility`, the top-level output and the leaderboard are seen by students at
once ("visible"), and extra_data is for staff ("hidden"). An item may appear in a place only when everyone
who can read the place may see the item. Publication can come before the due date, so neither of the two
"after" visibilities covers the other: "visible" items may go anywhere, "hidden" places may hold anything,
and otherwise only the same visibility matches.
"""
from __future__ import annotations

import math
from typing import Iterable

VISIBLE, HIDDEN = "visible", "hidden"
VISIBILITIES = (VISIBLE, "after_due_date", "after_published", HIDDEN)
TOP_OUTPUT = LEADERBOARD = VISIBLE  # what students see as soon as the results exist (extra_data: staff's)
WHEN = {"after_due_date": "after the due date", "after_published": "once grades are published",
        HIDDEN: "to staff only"}


def may_show(item: str, place: str) -> bool:
    """True when every reader of a place with visibility `place` may see an item with visibility `item`."""
    return item == VISIBLE or place == HIDDEN or item == place


def withheld(title: str, item: str) -> str:
    """What a place says instead of an item it may not show."""
    return f"{title}: shown {WHEN.get(item, 'later')}"


def test_visibility(test: dict, default: str) -> str:
    """A results.json test's visibility; Gradescope gives tests without one the top-level visibility."""
    value = test.get("visibility")
    return value if isinstance(value, str) else default


def visible_score(tests: Iterable[dict], default: str, place: str) -> tuple[float, float, int]:
    """(points, maximum, tests withheld) of the tests a place of visibility `place` may show."""
    points = maximum = 0.0
    held = 0
    for test in tests:
        if may_show(test_visibility(test, default), place):
            points += number(test.get("score"))
            maximum += number(test.get("max_score"))
        else:
            held += 1
    return points, maximum, held


def number(value: object) -> float:
    """A score as results.json may hold it (a number, a numeric string, or nothing); 0 when it is not one."""
    try:
        result = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0
    return result if math.isfinite(result) else 0.0
