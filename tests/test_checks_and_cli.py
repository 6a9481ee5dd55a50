"""Instructor checks beside the built-in tests, and the CLI's contract (exit status, fallback results)."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from conftest import REPO, SCHEMA, config_with, grade, make_reference, write_submission
from grader.cli import main as grader_main

ZEROS = """
import torch

def predict_q1(images):
    return torch.zeros(len(images), 10)

def predict_q2(images):
    n, _, h, w = images.shape
    scores = torch.zeros(n, 6, h, w)
    scores[:, 5] = 1.0  # "person" everywhere
    return scores
"""


def test_example_checks_land_in_results_with_static_max_score(tmp_path: Path) -> None:
    checks = tmp_path / "checks"
    checks.mkdir()
    (checks / "test_example.py").write_text((REPO / "examples/checks/test_submission_checks.py").read_text())
    (checks / "test_skipped.py").write_text(textwrap.dedent("""
        import unittest
        from gradescope_utils.autograder_utils.decorators import weight

        class Skipped(unittest.TestCase):
            @weight(4)
            @unittest.skip("not this term")
            def test_never(self):
                \"\"\"Q3 skipped check\"\"\"
    """))
    config = config_with(tmp_path, **{'checks = ""': f'checks = "{checks}"'})
    submission = write_submission(tmp_path / "submission", ZEROS)
    data = make_reference(tmp_path / "data", n_q1=10, n_q2=2)
    rc, report = grade(submission, data, tmp_path / "results.json", "--config", str(config))
    assert rc == 0
    names = {t["name"]: t for t in report["tests"]}
    assert names["Q3 weight files are at most 50 MB each"]["score"] == 2
    assert names["Q3 weight files are at most 50 MB each"]["number"] == "3.1"
    person = names["Q3 bonus: person IoU (3 points at 0.6)"]
    iou = report["extra_data"]["metrics"]["q2"]["per_class"]["person"]["IoU"]
    assert person["max_score"] == 3 and person["score"] == pytest.approx(round(3 * min(iou / 0.6, 1), 2))
    assert person["visibility"] == "after_published"
    # A skipped check still counts towards the maximum, at 0 points.
    assert names["Q3 skipped check"] == {"name": "Q3 skipped check", "score": 0.0, "max_score": 4.0,
                                         "status": "failed", "output": "This check did not run (skipped)."}
    assert "Q2 person IoU" not in names  # leaderboard entries are not tests: they join the leaderboard
    board = {entry["name"]: entry for entry in report["leaderboard"]}
    assert list(board) == ["Q1 accuracy", "Q2 mAP", "Q2 mIoU", "Q2 person IoU"]
    assert board["Q2 person IoU"]["value"] == pytest.approx(iou)


def test_broken_check_stops_the_grader_before_student_code(tmp_path: Path) -> None:
    checks = tmp_path / "checks"
    checks.mkdir()
    (checks / "test_broken.py").write_text("import no_such_module\n")
    config = config_with(tmp_path, **{'checks = ""': f'checks = "{checks}"'})
    marker = tmp_path / "student-ran"
    submission = write_submission(tmp_path / "submission", f"open({str(marker)!r}, 'w')\n" + ZEROS)
    rc, report = grade(submission, make_reference(tmp_path / "data", n_q1=5, n_q2=1), tmp_path / "results.json",
                       "--config", str(config))
    assert rc == 2
    assert not marker.exists()
    assert "instructor checks failed to load" in report["output"]
    assert [t["max_score"] for t in report["tests"]] == [20, 30]  # every configured question still listed


def test_bad_config_writes_a_valid_results_file_and_exits_2(tmp_path: Path, capsys) -> None:
    config = config_with(tmp_path, **{"points = 20": "points = -1"})
    results = tmp_path / "out" / "results.json"
    rc = grader_main(["--submission", str(tmp_path), "--data", str(tmp_path), "--results", str(results),
                      "--config", str(config)])
    assert rc == 2
    report = json.loads(results.read_text())
    jsonschema.validate(report, SCHEMA)
    assert "misconfigured" in report["output"] and "[q1].points" in report["output"]
    assert "configuration error" in capsys.readouterr().err


def test_results_file_is_replaced_atomically(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    results.write_text("stale")
    submission = write_submission(tmp_path / "submission", ZEROS)
    data = make_reference(tmp_path / "data", n_q1=50)
    rc, report = grade(submission, data, results, "--config", str(config_with(tmp_path, "q1")))
    assert rc == 0
    # All-zero scores: argmax picks class 0 for every image.
    expected = float((np.load(data / "q1" / "labels.npy") == 0).mean())
    assert report["extra_data"]["metrics"]["q1"]["accuracy"] == expected
    assert not list(tmp_path.glob(".results-*"))


def test_results_name_the_grader_version_and_the_config_hash(tmp_path: Path) -> None:
    import hashlib

    from grader import __version__

    config = config_with(tmp_path, "q1")
    submission = write_submission(tmp_path / "submission", ZEROS)
    _, report = grade(submission, make_reference(tmp_path / "data", n_q1=5), tmp_path / "results.json",
                      "--config", str(config))
    assert report["extra_data"]["grader"] == {"version": __version__,
                                              "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest()}


def test_no_overlay_picture_of_a_question_that_failed_midway(tmp_path: Path) -> None:
    code = ZEROS + """
calls = []

def predict_q2(images):
    calls.append(1)
    if len(calls) > 1:
        raise RuntimeError("second batch")
    n, _, h, w = images.shape
    return torch.zeros(n, 6, h, w)
"""
    submission = write_submission(tmp_path / "submission", code)
    config = config_with(tmp_path, **{"batch_size = 2\n": "batch_size = 1\n"})
    plots = tmp_path / "plots"
    rc, report = grade(submission, make_reference(tmp_path / "data", n_q1=5, n_q2=2), tmp_path / "results.json",
                       "--config", str(config), "--plots", str(plots))
    assert rc == 0 and "raised RuntimeError: second batch" in report["extra_data"]["metrics"]["q2"]["error"]
    assert (plots / "q1_confusion.png").exists()
    assert not (plots / "q2_overlays.png").exists()
