"""The daily submission limit on crafted Gradescope metadata: what counts, what stands, and what runs."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import by_question, config_with, grade, make_reference, write_submission
from grader.submission_limit import Earlier, MetadataError, check_limit, read_metadata

NOW = datetime(2026, 12, 1, 18, 0, tzinfo=timezone(timedelta(hours=-8)))


def _entry(hours_ago: float, score: float, *, over: bool = False, error: bool = False) -> dict:
    results = {"tests": [{"name": "Q1 Fashion-MNIST classification", "score": score, "max_score": 20,
                          "output": f"earlier run scoring {score:g}"}],
               "extra_data": {"submission_limit": {"over_limit": over}}}
    entry = {"submission_time": (NOW - timedelta(hours=hours_ago)).isoformat(), "score": score, "results": results}
    if error:
        entry["autograder_error"] = True
    return entry


def _metadata(tmp_path: Path, previous: list[dict]) -> Path:
    path = tmp_path / "submission_metadata.json"
    path.write_text(json.dumps({"id": 1, "created_at": NOW.isoformat(), "users": [{"name": "S", "email": "s@x"}],
                                "previous_submissions": previous}))
    return path


def test_only_valid_submissions_of_the_last_24_hours_count(tmp_path: Path) -> None:
    previous = [_entry(30, 19), _entry(20, 5), _entry(10, 12, over=True), _entry(5, 0, error=True), _entry(2, 8)]
    now, earlier = read_metadata(_metadata(tmp_path, previous))
    assert now == NOW and [e.score for e in earlier] == [19, 5, 8]  # over-limit and errored ones are not valid
    check = check_limit(now, earlier, 3, "best")
    assert not check.over and check.counted == 2 and check.record == {"over_limit": False, "valid_in_24h": 3, "limit": 3}
    check = check_limit(now, earlier, 2, "best")
    assert check.over and check.counted == 2
    assert check.kept is not None and check.kept.score == 19  # the best of all earlier ones, not only today's
    assert check.next_at == NOW - timedelta(hours=20) + timedelta(hours=24)  # when the older of today's two leaves
    last = check_limit(now, earlier, 2, "last")
    assert last.kept is not None and last.kept.score == 8


def test_best_prefers_the_latest_of_equal_scores() -> None:
    a, b = (Earlier(NOW - timedelta(hours=h), 10.0, None) for h in (3, 1))
    check = check_limit(NOW, [a, b], 1, "best")
    assert check.kept is b and check.next_at == b.time + timedelta(hours=24)


def test_best_is_chosen_by_what_students_see_now_never_by_hidden_points() -> None:
    """A split's private part is hidden until the due date: a choice by the whole total would tell the
    student which earlier submission is privately best (#27). The choice uses only what is shown now."""
    def earlier(hours: float, public: float, private: float) -> Earlier:
        tests = [{"name": "Q1 (public part)", "score": 0, "max_score": 0},
                 {"name": "Q1", "score": private, "max_score": 20, "visibility": "after_due_date"},
                 {"name": "Q2", "score": public, "max_score": 30}]
        return Earlier(NOW - timedelta(hours=hours), public + private, {"tests": tests})

    shown_better, privately_better = earlier(3, 25, 0), earlier(2, 20, 20)
    check = check_limit(NOW, [shown_better, privately_better], 1, "best", "visible")
    assert check.kept is shown_better  # the whole totals were 25 and 40
    assert check_limit(NOW, [shown_better, privately_better], 1, "last").kept is privately_better


@pytest.mark.parametrize("text, message", [
    ("not json", "Expecting value"),
    ('{"created_at": "yesterday", "previous_submissions": []}', "not an ISO 8601 time"),
    ('{"created_at": "2026-12-01T10:00:00", "previous_submissions": []}', "without a time zone"),
    ('{"created_at": "2026-12-01T10:00:00Z", "previous_submissions": {}}', "a list previous_submissions"),
])
def test_malformed_metadata_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "m.json"
    path.write_text(text)
    with pytest.raises(MetadataError, match=message):
        read_metadata(path)


def _grade_with_limit(tmp_path: Path, metadata: Path | None, limit: int = 2) -> dict:
    marker = tmp_path / "ran"
    code = f"""
open({str(marker)!r}, "w").close()
def predict_q1(images):
    return images.flatten(1)[:, :10]
"""
    submission = write_submission(tmp_path / "submission", code)
    data = make_reference(tmp_path / "data", n_q1=10)
    config = config_with(tmp_path, "q1", **{"daily_submission_limit = 0": f"daily_submission_limit = {limit}"})
    extra = ["--submission-metadata", str(metadata)] if metadata else []
    _, report = grade(submission, data, tmp_path / "results.json", "--config", str(config), "--isolation", "process", *extra)
    report["ran"] = marker.exists()
    return report


def test_past_the_limit_nothing_runs_and_the_best_earlier_result_stands(tmp_path: Path) -> None:
    report = _grade_with_limit(tmp_path, _metadata(tmp_path, [_entry(30, 19), _entry(20, 5), _entry(2, 8)]))
    assert not report["ran"]
    assert report["score"] == 19 and report["tests"][0]["score"] == 19
    assert "Submission limit reached: 2 valid submissions in the last 24 hours (the limit is 2)" in report["output"]
    assert "earlier run scoring 19" in report["tests"][0]["output"]
    assert report["extra_data"]["submission_limit"] == {"over_limit": True, "valid_in_24h": 2, "limit": 2}


def test_within_the_limit_it_grades_and_records_its_count(tmp_path: Path) -> None:
    report = _grade_with_limit(tmp_path, _metadata(tmp_path, [_entry(30, 19), _entry(2, 8)]))
    assert report["ran"] and report["extra_data"]["metrics"]["q1"]["n"] == 10
    assert "This is valid submission 2 of 2 in 24 hours." in report["output"]
    assert report["extra_data"]["submission_limit"] == {"over_limit": False, "valid_in_24h": 2, "limit": 2}


def test_unreadable_or_missing_metadata_grades_and_says_so(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    report = _grade_with_limit(tmp_path / "a", bad)
    assert report["ran"] and "the daily submission limit could not be applied" in report["output"]
    report = _grade_with_limit(tmp_path / "b", None)
    assert report["ran"] and "not applied here (no submission_metadata.json" in report["output"]
    assert "Q1" in by_question(report)
