"""Example instructor checks (enable with `checks = "../examples/checks"` in grader/config.toml).

Checks run in the grader's process after the predictions: they read the submission as files and the
metrics from `context`, and never import student code.
"""
import unittest

from gradescope_utils.autograder_utils.decorators import leaderboard, number, partial_credit, visibility, weight

from grader.checks import context

WEIGHT_LIMIT_MB = 50


class SubmissionChecks(unittest.TestCase):
    @weight(2)
    @number("3.1")
    def test_weights_small_enough(self):
        """Q3 weight files are at most 50 MB each"""
        for path in context["submission"].rglob("*.pt"):
            size = path.stat().st_size / 2**20
            self.assertLessEqual(size, WEIGHT_LIMIT_MB, f"{path.name} is {size:.1f} MB")

    @partial_credit(3)
    @visibility("after_published")
    def test_person_iou(self, set_score=None):
        """Q3 bonus: person IoU (3 points at 0.6)"""
        # Hidden until published: it may use the whole set (context["metrics"] holds only what students may
        # see now: a split question's public part).
        person = context["metrics_with_private"].get("q2", {}).get("per_class", {}).get("person", {}).get("IoU") or 0.0
        set_score(round(3 * min(person / 0.6, 1.0), 2))
        print(f"person IoU: {person:.2f}")

    @leaderboard("Q2 person IoU")
    def test_person_leaderboard(self, set_leaderboard_value=None):
        """Leaderboard column"""
        set_leaderboard_value(context["metrics"].get("q2", {}).get("per_class", {}).get("person", {}).get("IoU") or 0)
