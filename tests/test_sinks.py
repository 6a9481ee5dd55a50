"""One escaping per sink that student text reaches: CSV cells, Markdown, instructor checks' output in
results.json, and show_output = false honoured for error messages too (an exception's words are output)."""
from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from conftest import LAYERS, by_question, config_with, grade, make_reference, write_submission
from grader.text import STUDENT_MARK, csv_cell, markdown_code


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


@pytest.mark.parametrize("sent", ['{"type": "LEAKED-PIXELS"}', '{"type": "batch", "start": 0, "count": "LEAKED-PIXELS"}'])
def test_show_output_false_keeps_what_the_child_sent_on_its_channel_private(tmp_path: Path, sent: str) -> None:
    """The grader's own protocol error quotes the bytes the child chose (#27): with show_output = false the
    student sees the fault's kind, staff the words."""
    code = f"""
import json, os, sys, time
FD = json.loads(sys.argv[1])["fd"]
def predict_q1(images):
    os.write(FD, {(sent + chr(10)).encode()!r})
    time.sleep(1000)
"""
    config = config_with(tmp_path, "q1", **{"show_output = true": "show_output = false"})
    rc, report = grade(write_submission(tmp_path / "submission", code), make_reference(tmp_path / "data", n_q1=5),
                       tmp_path / "results.json", "--config", str(config), "--isolation", "process", "--timeout", "20")
    assert rc == 0 and report["extra_data"]["metrics"]["q1"]["error_kind"] == "protocol"
    assert "LEAKED-PIXELS" in report["extra_data"]["metrics"]["q1"]["error"]  # staff see it
    assert "LEAKED-PIXELS" not in json.dumps([report["tests"], report["output"]])
    assert "your code failed (protocol); its message is not shown" in by_question(report)["Q1"]["output"]


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


FORGED = ["Accuracy: 96.2 %", "== Q2 semantic segmentation: 30 / 30", "Total: 50 / 50", "ERROR: none",
          "Isolation: all of it"]
SUMMARY_STARTS = ("== Q", "Total:", "Accuracy:", "ERROR:", "Isolation:")


@pytest.mark.parametrize("output_format", ["md", "text"])
def test_student_text_never_starts_a_line_of_the_graders_output(tmp_path: Path, layer: str, output_format: str,
                                                                 capsys) -> None:
    """An exception whose message holds the grader's own summary lines (#30): each stands in stdout, in the
    top-level output and in a plain-text test marked as the student's, never where a line of the grader's
    begins; the real Q2 block and total are the only ones."""
    newline = "\n"
    code = f"""
print({newline.join(FORGED)!r})
def predict_q1(images):
    raise ValueError({(newline + newline.join(FORGED)) !r})
def predict_q2(images):
    import torch
    n, _, h, w = images.shape
    return torch.zeros(n, 6, h, w)
"""
    submission = write_submission(tmp_path / "submission", code)
    data = make_reference(tmp_path / "data", n_q1=5, n_q2=1)
    config = config_with(tmp_path, "q1 q2", **{'output_format = "md"': f'output_format = "{output_format}"'})
    rc, report = grade(submission, data, tmp_path / "results.json", "--config", str(config), *LAYERS[layer])
    out = capsys.readouterr().out
    assert rc == 0
    q1 = by_question(report)["Q1"]["output"]
    for sink in (out, report["output"], *([q1] if output_format == "text" else [])):
        for forged in FORGED:
            assert not [line for line in sink.splitlines() if line.startswith(forged)], sink
    assert f"{STUDENT_MARK}Accuracy: 96.2 %" in out  # still there for the student to read, marked
    starts = {start: len([line for line in out.splitlines() if line.startswith(start)]) for start in SUMMARY_STARTS}
    assert starts == {"== Q": 2, "Total:": 1, "Accuracy:": 0, "ERROR:": 1, "Isolation:": 1}, out  # the grader's own
    if output_format == "text":
        assert f"{STUDENT_MARK}Total: 50 / 50" in q1
