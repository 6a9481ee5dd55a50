"""One escaping per sink that student text reaches: CSV cells, Markdown, instructor checks' output in
results.json, and show_output = false honoured for error messages too (an exception's words are output)."""
from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from conftest import by_question, config_with, grade, make_reference, write_submission
from grader.text import csv_cell, markdown_code


@pytest.mark.parametrize("value, cell", [("=1+1", "'=1+1"), ("+SUM(A1)", "'+SUM(A1)"), ("-2", "'-2"), ("@x", "'@x"),
                                         ("\tx", "\\tx"), ("\rx", "\\rx"), ("Ada <a@b.c>", "Ada <a@b.c>"),
                                         ("a\nb", "a\\nb"), ("", "")])
def test_csv_cells_never_start_a_formula_and_stay_on_one_line(value: str, cell: str) -> None:
    assert csv_cell(value) == cell


def test_markdown_code_spans_hold_any_text_inert() -> None:
    assert markdown_code("![x](http://e/x.png)") == "` ![x](http://e/x.png) `"
    assert markdown_code("a ``b`` c") == "``` a ``b`` c ```"  # a longer fence than any run inside
    assert markdown_code("# head\n<img src=x>") == "` # head\\n<img src=x> `"
    for text in ("x", "a`b", "``", "a ``` b"):
        span = markdown_code(text)
        fence = re.match("`+", span).group()
        assert fence not in span[len(fence):-len(fence)]  # the span cannot be closed early


RAISES = """
def predict_q1(images):
    print("PRINTED-PIXELS", images[0, 0, 0, :4].tolist())
    raise ValueError("LEAKED-PIXELS " + str(images[0, 0, 0, :4].tolist()))
"""


@pytest.mark.parametrize("show", [True, False])
def test_show_output_false_also_keeps_error_messages_private(tmp_path: Path, show: bool,
                                                             capsys: pytest.CaptureFixture) -> None:
    submission = write_submission(tmp_path / "submission", RAISES)
    config = config_with(tmp_path, "q1", **{"show_output = true": f"show_output = {str(show).lower()}"})
    rc, report = grade(submission, make_reference(tmp_path / "data", n_q1=5), tmp_path / "results.json",
                       "--config", str(config), "--isolation", "process")
    printed, output = capsys.readouterr().out, by_question(report)["Q1"]["output"]
    assert rc == 0 and report["extra_data"]["metrics"]["q1"]["error_kind"] == "exception"
    assert "LEAKED-PIXELS" in report["extra_data"]["metrics"]["q1"]["error"]  # staff see it
    for student_sees in (output, printed, report["output"]):
        assert ("LEAKED-PIXELS" in student_sees) == (show and student_sees is not report["output"])
        assert ("PRINTED-PIXELS" in student_sees) == (show and student_sees is output)
    if not show:
        assert "your code failed (exception); its message is not shown" in output


def test_instructor_checks_output_is_escaped_like_the_graders(tmp_path: Path) -> None:
    checks = tmp_path / "checks"
    checks.mkdir()
    (checks / "test_quotes.py").write_text(textwrap.dedent('''
        import unittest
        from gradescope_utils.autograder_utils.decorators import weight

        class Quotes(unittest.TestCase):
            @weight(1)
            def test_quotes_the_submission(self):
                """quotes the submission"""
                print("from predict.py: \\x1b[2J\\u202eevil \\udcff")
    '''))
    submission = write_submission(tmp_path / "submission", "def predict_q1(images):\n    return images.flatten(1)[:, :10]\n")
    config = config_with(tmp_path, "q1", **{'checks = ""': f'checks = "{checks}"'})
    _, report = grade(submission, make_reference(tmp_path / "data", n_q1=5), tmp_path / "results.json",
                      "--config", str(config), "--isolation", "process")
    check = next(t for t in report["tests"] if t["name"] == "quotes the submission")
    assert "\\x1b[2J\\u202eevil \\xff" in check["output"]
    text = json.dumps(report, ensure_ascii=False)
    text.encode("utf-8")  # strict UTF-8: no lone surrogate left
    assert "\x1b" not in text and "\u202e" not in text
