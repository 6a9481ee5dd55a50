"""One visibility policy for every place the grader writes: a question students may not see yet adds
nothing to the places they see now (top-level output, leaderboard, stdout, the over-limit message)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import by_question, config_with, grade, make_reference, write_submission
from grader.visibility import may_show, visible_score
from test_checks_and_cli import ZEROS as SUBMISSION  # Q1 all zeros, Q2 "person" everywhere

LATER = ("after_due_date", "after_published", "hidden")
Q2 = '[q2]\ntitle = "Q2 semantic segmentation"\n'


def q2_shown(tmp_path: Path, visibility: str, **replacements: str) -> Path:
    """The default config with Q2's visibility set to `visibility`."""
    return config_with(tmp_path, **{Q2: Q2 + f'visibility = "{visibility}"\n',
                                    'visibility = "visible"\nmode = "code"\nbatch_size = 2': 'mode = "code"\nbatch_size = 2',
                                    **replacements})


def test_the_policy_is_a_lattice_with_visible_at_the_bottom_and_hidden_at_the_top() -> None:
    for item in ("visible", *LATER):
        assert may_show("visible", item) and may_show(item, "hidden") and may_show(item, item)
    for item in LATER:
        assert not may_show(item, "visible")
    # Grades can be published before the due date: neither "after" place holds the other's items.
    assert not may_show("after_due_date", "after_published") and not may_show("after_published", "after_due_date")
    assert not may_show("hidden", "after_due_date")


def test_visible_score_counts_only_what_the_place_may_show_and_survives_odd_scores() -> None:
    tests = [{"score": 3, "max_score": 5}, {"score": "2", "max_score": 2, "visibility": "hidden"},
             {"score": "n/a", "max_score": None, "visibility": "visible"}, {"score": 1, "max_score": 1}]
    assert visible_score(tests, "visible", "visible") == (4.0, 6.0, 1)
    assert visible_score(tests, "after_due_date", "visible") == (0.0, 0.0, 3)  # no visibility: the default's


@pytest.mark.parametrize("later", LATER)
def test_a_question_shown_later_adds_nothing_to_what_students_see_now(tmp_path: Path, later: str,
                                                                     capsys: pytest.CaptureFixture) -> None:
    submission = write_submission(tmp_path / "submission", SUBMISSION)
    data = make_reference(tmp_path / "data", n_q1=20, n_q2=2)
    config = q2_shown(tmp_path, later)
    rc, report = grade(submission, data, tmp_path / "results.json", "--config", str(config), "--isolation", "process")
    printed = capsys.readouterr().out
    assert rc == 0
    tests = by_question(report)
    assert tests["Q2"]["visibility"] == later and "mIoU" not in json.dumps(report["leaderboard"])
    assert "AP:" in tests["Q2"]["output"]  # the test itself keeps everything, under its own visibility
    assert "Q2 semantic segmentation: shown" in report["output"] and "/ 30" not in report["output"]
    assert [e["name"] for e in report["leaderboard"]] == ["Q1 accuracy"]
    assert "AP:" not in printed and "/ 30" not in printed and "Q2 semantic segmentation: shown" in printed
    assert f"Total: {tests['Q1']['score']:g} / 20 (of the tests shown here; 1 shown later)" in printed
    assert "mIoU" in report["extra_data"]["metrics"]["q2"]  # staff


def test_stdout_visible_only_after_the_due_date_may_show_questions_due_then(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    submission = write_submission(tmp_path / "submission", SUBMISSION)
    data = make_reference(tmp_path / "data", n_q1=20)
    config = config_with(tmp_path, "q1", **{'stdout_visibility = "visible"': 'stdout_visibility = "after_due_date"',
                                            'visibility = "visible"\n# "code"': 'visibility = "after_due_date"\n# "code"'})
    grade(submission, data, tmp_path / "results.json", "--config", str(config), "--isolation", "process")
    assert "Accuracy:" in capsys.readouterr().out


def test_the_over_limit_message_quotes_only_points_students_may_see(tmp_path: Path) -> None:
    now = datetime(2026, 12, 3, 12, tzinfo=timezone.utc)
    results = {"tests": [{"name": "Q1 Fashion-MNIST classification", "score": 18, "max_score": 20, "visibility": "visible"},
                         {"name": "Q2 semantic segmentation", "score": 27, "max_score": 30, "visibility": "hidden"}],
               "leaderboard": [{"name": "Q1 accuracy", "value": 0.9}, {"name": "Q2 mIoU", "value": 0.5}]}
    earlier = [{"submission_time": (now - timedelta(hours=h)).isoformat(), "score": 45, "results": results} for h in (3, 2)]
    metadata = tmp_path / "submission_metadata.json"
    metadata.write_text(json.dumps({"created_at": now.isoformat(), "previous_submissions": earlier}))
    config = q2_shown(tmp_path, "hidden", **{"daily_submission_limit = 0": "daily_submission_limit = 2"})
    submission = write_submission(tmp_path / "submission", SUBMISSION)
    _, report = grade(submission, make_reference(tmp_path / "data", n_q1=5), tmp_path / "results.json", "--config",
                      str(config), "--isolation", "process", "--submission-metadata", str(metadata))
    assert "earlier result stands: 18 / 20 on the tests shown now (1 more shown later)" in report["output"]
    assert "45" not in report["output"] and "score" not in report  # Gradescope adds up the tests itself
    assert sum(t["score"] for t in report["tests"]) == 45
    assert [e["name"] for e in report["leaderboard"]] == ["Q1 accuracy"]
