"""Instructor checks: gradescope-utils-style unittest cases that land in results.json beside the built-ins.

A check is a `unittest.TestCase` method in `test_*.py` inside the folder named by `[grader].checks`,
decorated as instructors know from gradescope-utils (`@weight`, `@partial_credit`, `@visibility`,
`@number`, `@leaderboard`). Checks run in the grader's process, after the predictions, and must never
import student code: they read `context["submission"]` (the folder, as files) and `context["metrics"]`
(a split question's public part alone: what students may see now) or, for a check whose test is hidden
until the private part is shown, `context["metrics_with_private"]` (extra_data.metrics, whole). Their
maximum score comes from the decorators, not from which checks ran.
"""
from __future__ import annotations

import io
import json
import unittest
from pathlib import Path

from gradescope_utils.autograder_utils.json_test_runner import JSONTestRunner

from grader.config import ConfigError
from grader.text import printable

context: dict = {}


def _flatten(suite: unittest.TestSuite) -> list[unittest.TestCase]:
    tests = []
    for item in suite:
        tests.extend(_flatten(item) if isinstance(item, unittest.TestSuite) else [item])
    return tests


def load_checks(folder: Path) -> unittest.TestSuite:
    """Discover the checks now, before any student code runs, so that a broken check stops the grader early."""
    loader = unittest.TestLoader()
    suite = loader.discover(str(folder), pattern="test_*.py", top_level_dir=str(folder))
    if loader.errors:
        raise ConfigError(f"{folder}: instructor checks failed to load:\n" + "\n".join(str(e) for e in loader.errors))
    return suite


def _method(test: unittest.TestCase):
    return getattr(test, test._testMethodName)


def _printable(entry: dict) -> dict:
    return {k: printable(v) if isinstance(v, str) else v for k, v in entry.items()}


def run_checks(suite: unittest.TestSuite, submission: Path, metrics: dict, with_private: dict) -> tuple[list[dict], list[dict]]:
    """Run the checks with gradescope-utils' runner: (tests, leaderboard entries). A check that did not run
    still appears, at 0 points; `@leaderboard` checks give leaderboard entries, not tests. `metrics` are what
    students may see now (a split question's public part); `with_private` the whole, for checks whose tests
    are hidden until the private part is shown."""
    context.update(submission=submission, metrics=metrics, metrics_with_private=with_private)
    planned = _flatten(suite)  # before running: a suite drops its tests as it runs them
    stream = io.StringIO()
    JSONTestRunner(stream=stream, visibility="visible").run(suite)
    output = json.loads(stream.getvalue())
    # Checks may quote the submission's files: their text goes through the same escaping as the grader's own.
    tests = [_printable(t) for t in output.get("tests", [])]
    board = [_printable(e) for e in output.get("leaderboard", [])]
    reported = {t["name"] for t in tests}
    for test in planned:
        method = _method(test)
        name = test.shortDescription() or str(test)
        if name not in reported and not getattr(method, "__leaderboard_column__", None):
            tests.append({"name": name, "score": 0.0, "max_score": float(getattr(method, "__weight__", 0) or 0),
                          "status": "failed", "output": "This check did not run (skipped)."})
    return tests, board
