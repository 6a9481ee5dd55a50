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
    secret = make_reference(tmp_path / "secret", n_q1=10, n_q2=2, own=True)
    ran = make("autograder", f"REFERENCE={secret}", f"AUTOGRADER_ZIP={tmp_path / 'a.zip'}")
    assert ran.returncode == 0 and "q1: 10 images, q2: 2 images" in ran.stdout, ran.stderr[-2000:]


def test_a_checkout_other_users_cannot_enter_grades(tmp_path: Path) -> None:
    """A root user's clone in /root: the grader's own files there are never needed by the student user,
    and the interpreter goes where that user can run it (the Makefile's VENV), so `make grade` grades."""
    import os
    import shutil

    if os.geteuid() != 0 or shutil.which("runuser") is None:
        import pytest

        pytest.skip("needs root, and runuser to look as another user")
    closed = tmp_path / "root-home"
    closed.mkdir(mode=0o700)
    clone = closed / "mp-grader"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    for name in ("submission", "reference_data", "grader"):  # the working tree as it is, edits included
        shutil.rmtree(clone / name)
        shutil.copytree(REPO / name, clone / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "Makefile", clone / "Makefile")
    chosen = subprocess.run(["make", "-s", "--no-print-directory", "-C", str(clone), "--eval",  # as run from any make
                             "print-venv: ; @echo $(VENV)", "print-venv"], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert chosen.startswith("/var/cache/mp-grader/venv-"), chosen
    # Graded with this checkout's interpreter (reachable, its packages installed) in the closed clone's place.
    venv = Path(os.path.realpath(REPO / ".venv")) if (REPO / ".venv").is_dir() else None
    if venv is None:
        import pytest

        pytest.skip("no .venv in this checkout to grade with")
    results = tmp_path / "results.json"
    ran = subprocess.run(["make", "-C", str(clone), "grade", f"VENV={venv}", f"RESULTS={results}", "DEVICE=cpu"],
                         capture_output=True, text=True, timeout=900)
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    report = json.loads(results.read_text())
    assert "error" not in report["extra_data"]["metrics"]["q1"] and "error" not in report["extra_data"]["metrics"]["q2"]
    assert "Isolation:" in report["output"] and "separate process as" not in report["output"]
