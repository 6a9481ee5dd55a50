"""run_autograder on Gradescope's layout (/autograder/{source,submission,results}) under a temp folder."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema

from conftest import REPO, SCHEMA, make_reference, write_submission


def autograder_tree(root: Path, with_grader: bool = True) -> Path:
    source = root / "source"
    source.mkdir(parents=True)
    if with_grader:
        shutil.copytree(REPO / "grader", source / "grader", ignore=shutil.ignore_patterns("__pycache__"))
    make_reference(source / "reference_data", n_q1=30, n_q2=1)
    write_submission(root / "submission", """
        import torch

        def predict_q1(images):
            return torch.zeros(len(images), 10)

        def predict_q2(images):
            n, _, h, w = images.shape
            return torch.zeros(n, 6, h, w)
    """)
    return root


def run(root: Path, python: str = sys.executable) -> tuple[subprocess.CompletedProcess, dict]:
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "GRADER_PYTHON": python}
    proc = subprocess.run([str(REPO / "run_autograder")], env=env, capture_output=True, text=True, timeout=600)
    report = json.loads((root / "results" / "results.json").read_text())
    jsonschema.validate(report, SCHEMA)
    return proc, report


def test_run_autograder_grades_the_submission(tmp_path: Path) -> None:
    proc, report = run(autograder_tree(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert [t["max_score"] for t in report["tests"]] == [20, 30]
    assert report["extra_data"]["metrics"]["q1"]["n"] == 30
    assert "Total:" in proc.stdout


def test_run_autograder_leaves_valid_results_when_the_grader_cannot_start(tmp_path: Path) -> None:
    proc, report = run(autograder_tree(tmp_path, with_grader=False))
    assert proc.returncode == 0
    assert "The autograder failed to start" in report["output"]
    assert report["tests"] == [] and report["score"] == 0


def test_run_autograder_leaves_valid_results_without_a_source_folder(tmp_path: Path) -> None:
    root = autograder_tree(tmp_path)
    shutil.rmtree(root / "source")
    proc, report = run(root)
    assert proc.returncode == 0
    assert f"no source folder at {root / 'source'}" in report["output"] and report["score"] == 0


def test_run_autograder_leaves_valid_results_without_python(tmp_path: Path) -> None:
    proc, report = run(autograder_tree(tmp_path), python=str(tmp_path / "no-such-python"))
    assert proc.returncode == 0
    assert "The autograder failed to start (127)" in report["output"] and report["tests"] == []


def test_run_autograder_with_an_unreadable_config_says_so(tmp_path: Path) -> None:
    root = autograder_tree(tmp_path)
    (root / "source" / "grader" / "config.toml").write_text("points = [unterminated")
    proc, report = run(root)
    assert proc.returncode == 0
    assert "The autograder is misconfigured" in report["output"] and "not valid TOML" in report["output"]


def test_run_autograder_applies_the_daily_limit_from_gradescopes_metadata(tmp_path: Path) -> None:
    """run_autograder names /autograder/submission_metadata.json to the grader through its environment (the
    student user can read any process's command line in the user layer, never root's environment)."""
    root = autograder_tree(tmp_path)
    config = root / "source" / "grader" / "config.toml"
    config.write_text(config.read_text().replace("daily_submission_limit = 0", "daily_submission_limit = 1"))
    earlier = {"submission_time": "2026-12-03T09:00:00.000000+00:00", "score": 7.0,
               "results": {"tests": [{"name": "Q1", "score": 7.0, "max_score": 20}]}}
    (root / "submission_metadata.json").write_text(json.dumps(
        {"created_at": "2026-12-03T10:00:00.000000+00:00", "previous_submissions": [earlier]}))
    proc, report = run(root)
    assert proc.returncode == 0, proc.stderr
    assert "Submission limit reached" in proc.stdout and report["extra_data"]["submission_limit"]["over_limit"] is True
