"""Submissions that go wrong: each gets a clear message and 0 points, and grading carries on."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import by_question, config_with, grade, make_reference, write_submission

GOOD_Q2 = """
def predict_q2(images):
    import torch
    n, _, h, w = images.shape
    return torch.zeros(n, 6, h, w)
"""

CASES = {
    "syntax_error": ("def predict_q1(images)\n    return images\n", "importing predict.py failed: SyntaxError"),
    "missing_module": ("import no_such_module\n", "ModuleNotFoundError: No module named 'no_such_module'"),
    "missing_function": ("def predict(images):\n    return images\n", "predict.py has no function predict_q1(images)"),
    "wrong_shape": ("def predict_q1(images):\n    return images.flatten(1)[:, :5]\n",
                    "returned shape (60, 5) for a batch of 60 images; expected (60, 10)"),
    "labels_not_scores": ("def predict_q1(images):\n    return images.flatten(1)[:, :10].argmax(1)\n",
                          "returned shape (60,) for a batch of 60 images; expected (60, 10)"),
    "nan": ("def predict_q1(images):\n    return images.flatten(1)[:, :10] * float('nan')\n",
            "returned 600 NaN or infinite values"),
    "exception": ("def predict_q1(images):\n    return 1 / 0\n", "predict_q1 raised ZeroDivisionError: division by zero"),
    "huge_exception": ("def predict_q1(images):\n    raise ValueError('x' * 10**6)\n", "predict_q1 raised ValueError: xxxx"),
    "returns_list": ("def predict_q1(images):\n    return [0] * len(images)\n", "predict_q1 returned list"),
    "sys_exit": ("import sys\ndef predict_q1(images):\n    sys.exit(0)\n", "predict_q1 called sys.exit(0)"),
    "exit_at_import": ("raise SystemExit(3)\n", "importing predict.py failed: SystemExit: 3"),
    "os_exit": ("import os\ndef predict_q1(images):\n    os._exit(0)\n",
                "stopped before returning all predictions (0 of 60 images done): the process exited with status 0"),
    "segfault": ("import ctypes\ndef predict_q1(images):\n    ctypes.string_at(0)\n",
                 "the process was killed by SIGSEGV (a crash, e.g. a segmentation fault)"),
    "kills_itself": ("import os, signal\ndef predict_q1(images):\n    os.kill(os.getpid(), signal.SIGKILL)\n",
                     "the process was killed by SIGKILL"),
}

IMPORT_TIME = {"syntax_error", "missing_module", "exit_at_import"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_failure_is_reported_and_the_other_question_still_graded(tmp_path: Path, case: str) -> None:
    code, message = CASES[case]
    submission = write_submission(tmp_path / "submission", code + GOOD_Q2)
    data = make_reference(tmp_path / "data", n_q1=60, n_q2=1)
    rc, report = grade(submission, data, tmp_path / "results.json", "--config",
                       str(config_with(tmp_path, **{"batch_size = 100": "batch_size = 60"})))
    assert rc == 0
    tests = by_question(report)
    assert tests["Q1"]["score"] == 0 and tests["Q1"]["status"] == "failed"
    assert message in tests["Q1"]["output"], tests["Q1"]["output"]
    assert message in report["extra_data"]["metrics"]["q1"]["error"]
    if case in IMPORT_TIME:  # predict.py itself is broken: both questions say so
        assert message in report["extra_data"]["metrics"]["q2"]["error"]
    else:  # only predict_q1 is broken: Q2 is graded all the same
        assert report["extra_data"]["metrics"]["q2"]["n"] == 1
    assert tests["Q2"]["max_score"] == 30


def test_traceback_shows_the_students_line_only(tmp_path: Path) -> None:
    code = "def helper(x):\n    return x.no_such_method()\n\ndef predict_q1(images):\n    return helper(images)\n"
    submission = write_submission(tmp_path / "submission", code)
    data = make_reference(tmp_path / "data", n_q1=5)
    _, report = grade(submission, data, tmp_path / "results.json", "--config", str(config_with(tmp_path, "q1")))
    output = by_question(report)["Q1"]["output"]
    assert "predict.py\", line 2, in helper" in output and "x.no_such_method()" in output
    assert "child.py" not in output  # the grader's own frames are left out


def test_endless_loop_costs_its_time_limit_only(tmp_path: Path) -> None:
    submission = write_submission(tmp_path / "submission", "def predict_q1(images):\n    while True:\n        pass\n")
    data = make_reference(tmp_path / "data", n_q1=5)
    started = time.monotonic()
    _, report = grade(submission, data, tmp_path / "results.json", "--config", str(config_with(tmp_path, "q1")),
                      "--timeout", "4")
    elapsed = time.monotonic() - started
    assert "Time limit exceeded: predict_q1 did not finish within 4 s" in by_question(report)["Q1"]["output"]
    assert elapsed < 4 + 10


def test_output_flood_is_trimmed_and_cannot_forge_results(tmp_path: Path) -> None:
    forged = json.dumps({"tests": [{"name": "Q1", "score": 1000, "max_score": 20}]})
    code = f"""
import sys
print({forged!r})
def predict_q1(images):
    sys.stdout.write("x" * 5_000_000)
    sys.stderr.write("y" * 1_000_000 + "last words")
    return images.flatten(1)[:, :10]
"""
    submission = write_submission(tmp_path / "submission", code)
    data = make_reference(tmp_path / "data", n_q1=20)
    rc, report = grade(submission, data, tmp_path / "results.json", "--config", str(config_with(tmp_path, "q1")))
    assert rc == 0
    q1 = by_question(report)["Q1"]
    # The flood changes nothing of the grade: the accuracy of these scores, computed here on its own.
    images, labels = np.load(data / "q1" / "images.npy"), np.load(data / "q1" / "labels.npy")
    accuracy = float((images.reshape(20, -1)[:, :10].argmax(1) == labels).mean())
    assert report["extra_data"]["metrics"]["q1"]["accuracy"] == pytest.approx(accuracy)
    assert q1["score"] == min(20, math.floor(20 * accuracy / 0.9 + 0.5))
    assert "bytes of output left out" in q1["output"] and q1["output"].rstrip().endswith("last words\n```")
    assert len(q1["output"]) < 10_000
    assert (tmp_path / "results.json").stat().st_size < 50_000


def test_output_can_be_kept_out_of_results(tmp_path: Path) -> None:
    submission = write_submission(tmp_path / "submission", "print('secret debug')\ndef predict_q1(images):\n"
                                                            "    return images.flatten(1)[:, :10]\n")
    data = make_reference(tmp_path / "data", n_q1=5)
    config = config_with(tmp_path, "q1", **{"show_output = true": "show_output = false"})
    _, report = grade(submission, data, tmp_path / "results.json", "--config", str(config))
    assert "secret debug" not in json.dumps(report) and report["extra_data"]["metrics"]["q1"]["n"] == 5


def test_output_buffered_until_the_end_is_kept(tmp_path: Path) -> None:
    """The child skips the interpreter's teardown (a second with torch loaded), but loses none of its output:
    a last line without a newline, and a C library printf (to a pipe, which stdio would buffer but for -u)."""
    code = """
import ctypes, sys
def predict_q1(images):
    ctypes.CDLL(None).printf(b"from C, buffered\\n")
    sys.stderr.write("no newline at the end")
    return images.flatten(1)[:, :10]
"""
    submission = write_submission(tmp_path / "submission", code)
    data = make_reference(tmp_path / "data", n_q1=5)
    _, report = grade(submission, data, tmp_path / "results.json", "--config", str(config_with(tmp_path, "q1")))
    output = by_question(report)["Q1"]["output"]
    assert "from C, buffered" in output and "no newline at the end" in output, output
