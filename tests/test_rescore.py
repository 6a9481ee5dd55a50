"""`mp-grader rescore` finds each question's test by the key the grader wrote in it, not by its name (#27): an
instructor check named like a question keeps its own score, and a rescore under the unchanged config
changes nothing. (The rescore of a whole batch against a regrade is in tests/test_batch.py.)"""
from __future__ import annotations

import json
from pathlib import Path

from conftest import config_with, grade, make_reference, write_submission
from grader.batch.class_report import total
from grader.config import load_config
from grader.report import question_of
from grader.rescore import main as rescore
from grader.rescore import rescored

HONEST = """
def predict_q1(images):
    return images.flatten(1)[:, :10]
def predict_q2(images):
    import torch
    n, _, h, w = images.shape
    return torch.zeros(n, 6, h, w)
"""


def _graded_with_a_check_named_like_q2(tmp_path: Path) -> tuple[Path, Path]:
    """A results.json of an honest (trusted) submission, plus an instructor check's test named "Q2 bonus"."""
    config = config_with(tmp_path, "q1 q2")
    results = tmp_path / "results.json"
    rc, report = grade(write_submission(tmp_path / "submission", HONEST), make_reference(tmp_path / "data", 20, 1),
                       results, "--config", str(config), "--isolation", "process")
    assert rc == 0
    report["tests"].append({"name": "Q2 bonus", "score": 3.0, "max_score": 3.0, "status": "passed", "output": "check"})
    results.write_text(json.dumps(report))
    return results, config


def test_a_check_named_like_a_question_keeps_its_score(tmp_path: Path) -> None:
    results, config = _graded_with_a_check_named_like_q2(tmp_path)
    report = json.loads(results.read_text())
    loaded = load_config(config)
    assert [question_of(t, loaded) for t in report["tests"]] == ["q1", "q2", None]
    same = rescored(report, loaded)
    assert [(t["name"], t["score"]) for t in same["tests"]] == [(t["name"], t["score"]) for t in report["tests"]]
    assert total(same) == total(report)  # a prefix match once made the bonus a second Q2: 7.98 became 10
    assert rescore([str(results), "--config", str(config)]) == 0
    assert total(json.loads(results.with_name("results.rescored.json").read_text())) == total(report)


def test_new_points_move_the_question_and_leave_the_check(tmp_path: Path) -> None:
    results, config = _graded_with_a_check_named_like_q2(tmp_path)
    report = json.loads(results.read_text())
    edited = config.with_name("edited.toml")
    text = config.read_text()
    edited.write_text(text.replace("points = 30", "points = 60", 1))
    assert "points = 60" in edited.read_text()
    new = rescored(report, load_config(edited))
    before, after = {t["name"]: t for t in report["tests"]}, {t["name"]: t for t in new["tests"]}
    q2 = next(name for name in before if name.startswith("Q2 ") and name != "Q2 bonus")
    assert after[q2]["max_score"] == 60 and after[q2]["score"] > before[q2]["score"] > 0
    assert after["Q2 bonus"] == before["Q2 bonus"]


def test_a_report_from_before_the_key_is_matched_by_its_exact_title(tmp_path: Path) -> None:
    results, config = _graded_with_a_check_named_like_q2(tmp_path)
    report = json.loads(results.read_text())
    for test in report["tests"]:
        test.pop("extra_data", None)
    loaded = load_config(config)
    assert [question_of(t, loaded) for t in report["tests"]] == ["q1", "q2", None]
