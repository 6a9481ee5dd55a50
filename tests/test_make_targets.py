"""The README's commands, run as a user types them: every grading target honours SUBMISSION=."""
from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

from conftest import REPO, make_reference, write_submission

BROKEN = "raise RuntimeError('not finished yet')\n"


def make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-C", str(REPO), *args], capture_output=True, text=True, timeout=900)


def test_make_grade_grades_the_submission_it_is_given(tmp_path: Path) -> None:
    """The trap: `make grade SUBMISSION=dir` graded the reference submission instead."""
    folder = write_submission(tmp_path / "mine", BROKEN)
    results = tmp_path / "out" / "results.json"
    ran = make("grade", f"SUBMISSION={folder}", f"RESULTS={results}", "DEVICE=cpu")
    assert ran.returncode == 0, ran.stderr[-2000:]
    metrics = json.loads(results.read_text())["extra_data"]["metrics"]
    assert "RuntimeError: not finished yet" in metrics["q1"]["error"]
    assert "Total: 0 / 50" in ran.stdout


def test_make_submission_zip_and_make_autograder(tmp_path: Path) -> None:
    folder = write_submission(tmp_path / "mine", BROKEN)
    ran = make("submission-zip", f"SUBMISSION={folder}", f"SUBMISSION_ZIP={tmp_path / 's.zip'}")
    assert ran.returncode != 0 and "not zipped: trial run of predict_q1" in ran.stderr
    ran = make("submission-zip", f"SUBMISSION={REPO / 'submission'}", f"SUBMISSION_ZIP={tmp_path / 's.zip'}")
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "predict.py" in zipfile.ZipFile(tmp_path / "s.zip").namelist()
    assert make("autograder", f"AUTOGRADER_ZIP={tmp_path / 'a.zip'}").returncode != 0  # no REFERENCE=
    secret = make_reference(tmp_path / "secret", n_q1=10, n_q2=2)
    ran = make("autograder", f"REFERENCE={secret}", f"AUTOGRADER_ZIP={tmp_path / 'a.zip'}")
    assert ran.returncode == 0 and "q1: 10 images, q2: 2 images" in ran.stdout, ran.stderr[-2000:]
